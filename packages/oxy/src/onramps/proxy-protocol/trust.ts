/**
 * Which peers may send a PROXY header (`proxy_protocol.trusted_cidrs`). Built once per endpoint;
 * `has` runs once per connection or datagram, before anything is read.
 *
 * An IPv4 range also matches the same addresses IPv4-mapped (`::ffff:127.0.0.1`), the form a
 * dual-stack listener reports them in. Unlike `egress.blocked_cidrs`, NAT64 images are not
 * added: trust must not widen beyond what was written.
 */
import { BlockList, isIP } from 'node:net';
import { splitCidr } from '../../protocols/ip/cidr-text.ts';

/** A set of trusted CIDR ranges. */
export class TrustedPeers {
  readonly #list = new BlockList();
  readonly #empty: boolean;

  /** Throws a `RangeError` naming an entry that is not `address/prefix` or an address. */
  constructor(cidrs: readonly string[]) {
    this.#empty = cidrs.length === 0;
    for (const [i, cidr] of cidrs.entries()) {
      const { address, family, prefix } = splitCidr(cidr, i, 'trusted CIDR');
      if (family === 4) {
        this.#list.addSubnet(address, prefix, 'ipv4');
        this.#list.addSubnet(`::ffff:${address}`, 96 + prefix, 'ipv6');
      } else {
        this.#list.addSubnet(address, prefix, 'ipv6');
      }
    }
  }

  /** True when `ip` (a socket's `remoteAddress`) is trusted. Anything not an IP is not. */
  has(ip: string | undefined): boolean {
    if (this.#empty || ip === undefined) return false;
    const family = isIP(ip);
    if (family === 0) return false;
    return this.#list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }
}
