/**
 * CIDR membership for `egress.blocked_cidrs`, on Node's `net.BlockList`.
 *
 * The check runs on the address about to be connected to, after DNS, so a public name that
 * resolves to 127.0.0.1 is blocked like the literal. An IPv4 address can hide inside IPv6, and
 * reach the IPv4 host through a dual-stack socket, a translator or a tunnel relay; such an
 * address is blocked when the IPv4 address it carries is (as well as by the IPv6 ranges):
 * IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96` (deprecated, RFC 4291 §2.5.5.1; not `::`
 * and `::1`, the IPv6 unspecified and loopback addresses, which `::/128` and `::1/128` block), SIIT
 * `::ffff:0:0:0/96` (RFC 2765), NAT64 `64:ff9b::/96` (RFC 6052) and the local-use
 * `64:ff9b:1::/48` (RFC 8215, RFC 6052 §2.2 layout), 6to4 `2002::/16` (RFC 3056) and Teredo
 * `2001::/32` (RFC 4380: the client's address, inverted, and the server's). A zone index
 * (`fe80::1%eth0`) is ignored.
 *
 * Hot path: every upstream connect asks `has`. A dotted-quad IPv4 address (the common case) is
 * parsed by hand and matched against the IPv4 ranges as integers: `BlockList.check` with a
 * string builds a `SocketAddress` (a C++ object) per call, about 3 µs, which is most of what
 * a short tunnel's egress costs in JS. Other forms still go through the `BlockList`.
 */

import { BlockList, isIP } from 'node:net';
import { splitCidr } from '../../protocols/ip/cidr-text.ts';

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
      const { address, family, prefix } = splitCidr(cidr, i, 'blocked CIDR');
      if (family === 4) {
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        this.#v4.push((parseDottedQuad(address) & mask) >>> 0, mask);
        this.#list.addSubnet(address, prefix, 'ipv4');
      } else {
        this.#list.addSubnet(address, prefix, 'ipv6');
      }
      return `${address}/${prefix}`;
    });
  }

  /**
   * True when `ip` is inside one of the ranges. An IPv6 address that carries an IPv4 address
   * (see the top of this module) is also checked as that IPv4 address. A string that is not an
   * IP address is reported as blocked, so a caller's mistake fails closed.
   */
  has(ip: string): boolean {
    const v4 = parseDottedQuad(ip);
    if (v4 >= 0) return this.#hasV4(v4);
    const percent = ip.indexOf('%');
    const address = percent < 0 ? ip : ip.slice(0, percent);
    const family = isIP(address);
    if (family === 4) return this.#list.check(address, 'ipv4');
    if (family !== 6) return true;
    if (this.#list.check(address, 'ipv6')) return true;
    for (const embedded of embeddedIPv4(parseIPv6(address))) if (this.#hasV4(embedded)) return true;
    return false;
  }

  #hasV4(v4: number): boolean {
    const ranges = this.#v4;
    for (let i = 0; i < ranges.length; i += 2) {
      if ((v4 & (ranges[i + 1] as number)) >>> 0 === ranges[i]) return true;
    }
    return false;
  }
}

/** The 16 bytes of an IPv6 address `isIP` accepted (`::`, an embedded dotted quad). */
export function parseIPv6(address: string): Uint8Array {
  const out = new Uint8Array(16);
  const gap = address.indexOf('::');
  const parse = (part: string): number[] => {
    if (part === '') return [];
    const bytes: number[] = [];
    for (const group of part.split(':')) {
      if (group.includes('.')) {
        const v4 = parseDottedQuad(group);
        bytes.push(v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255);
      } else {
        const v = Number.parseInt(group, 16);
        bytes.push(v >> 8, v & 255);
      }
    }
    return bytes;
  };
  if (gap < 0) {
    out.set(parse(address));
    return out;
  }
  const head = parse(address.slice(0, gap));
  const tail = parse(address.slice(gap + 2));
  out.set(head);
  out.set(tail, 16 - tail.length);
  return out;
}

function v4At(b: Uint8Array, i: number): number {
  return (
    (((b[i] as number) << 24) |
      ((b[i + 1] as number) << 16) |
      ((b[i + 2] as number) << 8) |
      (b[i + 3] as number)) >>>
    0
  );
}

function zeros(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * The IPv4 addresses an IPv6 address carries, by the well-known forms (none for most). `::` and
 * `::1` carry none: inside `::/96`, they are the IPv6 unspecified and loopback addresses (RFC
 * 4291 §2.5.2, §2.5.3), not IPv4-compatible 0.0.0.0 and 0.0.0.1, and are checked as such.
 */
export function embeddedIPv4(b: Uint8Array): number[] {
  // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (SIIT)
  if (zeros(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return [v4At(b, 12)];
  // ::a.b.c.d (compatible), but for :: and ::1
  if (zeros(b, 0, 12)) return v4At(b, 12) > 1 ? [v4At(b, 12)] : [];
  if (zeros(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) return [v4At(b, 12)];
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    // 64:ff9b::/96 (RFC 6052 well-known prefix)
    if (zeros(b, 4, 12)) return [v4At(b, 12)];
    // 64:ff9b:1::/48 (RFC 8215): a /48 prefix puts the address in bytes 6-7 and 9-11 (8 is `u`)
    if (b[4] === 0 && b[5] === 1) {
      const v4 =
        (((b[6] as number) << 24) |
          ((b[7] as number) << 16) |
          ((b[9] as number) << 8) |
          (b[10] as number)) >>>
        0;
      return [v4];
    }
    return [];
  }
  // 2002:aabb:ccdd::/48 (6to4)
  if (b[0] === 0x20 && b[1] === 0x02) return [v4At(b, 2)];
  // 2001:0::/32 (Teredo): the server's address, and the client's, inverted
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0 && b[3] === 0) return [v4At(b, 4), ~v4At(b, 12) >>> 0];
  return [];
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
