/**
 * CIDR membership for `egress.blocked_cidrs`, on Node's `net.BlockList`.
 *
 * The check runs on the address about to be connected to, after DNS, so a public name that
 * resolves to 127.0.0.1 is blocked like the literal. An IPv4 address can hide inside IPv6: an
 * IPv4-mapped address (`::ffff:10.0.0.1`) reaches the IPv4 host through a dual-stack socket, and
 * one under the NAT64 prefix (`64:ff9b::a00:1`) reaches it through a NAT64 gateway, so both are
 * checked as the IPv4 address they carry: each IPv4 range is also added as its `::ffff:0:0/96`
 * and `64:ff9b::/96` images. A zone index (`fe80::1%eth0`) is ignored.
 *
 * Hot path: every upstream connect asks `has`. A dotted-quad IPv4 address (the common case) is
 * parsed by hand and matched against the IPv4 ranges as integers: `BlockList.check` with a
 * string builds a `SocketAddress` (a C++ object) per call, about 3 µs, which is most of what
 * a short tunnel's egress costs in JS. Other forms still go through the `BlockList`.
 */

import { BlockList, isIP } from 'node:net';

/**
 * What egress refuses by default: destinations inside the proxy's own host or networks, which a
 * client must not reach through it (SSRF). Each entry says why.
 */
export const DEFAULT_BLOCKED_CIDRS: readonly string[] = [
  '0.0.0.0/8', // "this network" (RFC 1122); 0.0.0.0 connects to the local host on Linux
  '127.0.0.0/8', // IPv4 loopback (RFC 1122)
  '10.0.0.0/8', // private (RFC 1918)
  '172.16.0.0/12', // private (RFC 1918)
  '192.168.0.0/16', // private (RFC 1918)
  '100.64.0.0/10', // carrier-grade NAT shared space (RFC 6598)
  '169.254.0.0/16', // link-local, including cloud metadata at 169.254.169.254 (RFC 3927)
  '224.0.0.0/4', // multicast (RFC 5771): never a TCP peer, and UDP to it would reach a whole segment
  '255.255.255.255/32', // limited broadcast (RFC 919)
  '::/128', // unspecified; like 0.0.0.0, connects to the local host
  '::1/128', // IPv6 loopback (RFC 4291)
  'fe80::/10', // IPv6 link-local (RFC 4291)
  'fc00::/7', // unique local addresses, the IPv6 private ranges (RFC 4193)
  'ff00::/8', // IPv6 multicast (RFC 4291)
];

/** A set of CIDR ranges, IPv4 and IPv6, that answers "is this address inside one of them?". */
export class CidrBlocklist {
  readonly #list = new BlockList();
  /** The IPv4 ranges as network and mask pairs (unsigned 32-bit), for `has`'s fast path. */
  readonly #v4: number[] = [];
  /** The ranges, normalised as given (a bare address counts as /32 or /128). */
  readonly cidrs: readonly string[];

  /** Throws a `RangeError` naming the entry when one is not `address/prefix` or an address. */
  constructor(cidrs: readonly string[]) {
    this.cidrs = cidrs.map((cidr, i) => {
      const slash = cidr.indexOf('/');
      const address = slash < 0 ? cidr : cidr.slice(0, slash);
      const family = isIP(address);
      const bits = family === 4 ? 32 : 128;
      const prefixText = slash < 0 ? String(bits) : cidr.slice(slash + 1);
      const prefix = Number(prefixText);
      if (family === 0 || address.includes('%') || !/^\d{1,3}$/.test(prefixText) || prefix > bits) {
        throw new RangeError(`blocked CIDR #${i} "${cidr}" is not an IPv4 or IPv6 address/prefix`);
      }
      if (family === 4) {
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        this.#v4.push((parseDottedQuad(address) & mask) >>> 0, mask);
        this.#list.addSubnet(address, prefix, 'ipv4');
        // The same hosts reached through IPv6: BlockList matches any textual form of these.
        this.#list.addSubnet(`::ffff:${address}`, 96 + prefix, 'ipv6');
        this.#list.addSubnet(`64:ff9b::${address}`, 96 + prefix, 'ipv6');
      } else {
        this.#list.addSubnet(address, prefix, 'ipv6');
      }
      return `${address}/${prefix}`;
    });
  }

  /**
   * True when `ip` is inside one of the ranges. IPv4-mapped and NAT64 (`64:ff9b::/96`) IPv6
   * addresses are checked as the IPv4 address they carry. A string that is not an IP address
   * is reported as blocked, so a caller's mistake fails closed.
   */
  has(ip: string): boolean {
    const v4 = parseDottedQuad(ip);
    if (v4 >= 0) {
      const ranges = this.#v4;
      for (let i = 0; i < ranges.length; i += 2) {
        if ((v4 & (ranges[i + 1] as number)) >>> 0 === ranges[i]) return true;
      }
      return false;
    }
    const percent = ip.indexOf('%');
    const address = percent < 0 ? ip : ip.slice(0, percent);
    const family = isIP(address);
    if (family === 4) return this.#list.check(address, 'ipv4');
    if (family !== 6) return true;
    return this.#list.check(address, 'ipv6');
  }
}

/**
 * The value of a strict dotted-quad IPv4 address (what `net.isIPv4` accepts: four decimal parts
 * of 0 to 255 without leading zeros) as an unsigned 32-bit integer, or -1 for anything else.
 */
export function parseDottedQuad(s: string): number {
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= n; i++) {
    const c = i === n ? 46 : s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255 || parts === 4) return -1;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // a leading zero
      part = part * 10 + (c - 48);
      digits++;
      if (digits > 3) return -1;
    } else return -1;
  }
  return parts === 4 ? value : -1;
}
