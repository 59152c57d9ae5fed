/**
 * CIDR ranges as settings write them (`10.0.0.0/8`, `::1/128`, a bare address for one host),
 * checked the one way every list of them is checked (`egress.blocked_cidrs`,
 * `proxy_protocol.trusted_cidrs`): the address must be an IPv4 or IPv6 literal without a zone
 * index, the prefix one to three digits no larger than the family's width.
 */
import { isIP } from 'node:net';

/** One range of a list, split and checked. */
export interface CidrText {
  readonly address: string;
  readonly family: 4 | 6;
  readonly prefix: number;
}

/**
 * Splits entry `index` of the list called `what` (for the message: "blocked CIDR") into address,
 * family and prefix. Throws a `RangeError` naming the entry when it is not `address/prefix` or an
 * address.
 */
export function splitCidr(cidr: string, index: number, what: string): CidrText {
  const slash = cidr.indexOf('/');
  const address = slash < 0 ? cidr : cidr.slice(0, slash);
  const family = isIP(address);
  const bits = family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(bits) : cidr.slice(slash + 1);
  const prefix = Number(prefixText);
  if (family === 0 || address.includes('%') || !/^\d{1,3}$/.test(prefixText) || prefix > bits) {
    throw new RangeError(`${what} #${index} "${cidr}" is not an IPv4 or IPv6 address/prefix`);
  }
  return { address, family: family as 4 | 6, prefix };
}
