/**
 * The Internet checksum (RFC 1071) and its incremental update (RFC 1624), sans-IO.
 *
 * Every IP-layer codec and rewrite goes through these few functions: the IPv4 header checksum,
 * the TCP, UDP and ICMPv6 checksums with their pseudo-header (RFC 793, 768, 8200 §8.1), and the
 * fix-up after a NAT rewrite of an address or a port. Sums are kept unfolded as plain numbers
 * (a 64 KiB packet sums to at most 2^31, well within a double's exact integers) and folded once.
 *
 * Ordering rule: to compute a checksum, zero its field first, sum, then write `~sum`. To update
 * one after rewriting bytes, call `updateChecksum` with the old and new bytes before or after
 * the rewrite (it reads only what it is given).
 */

/** Adds 16-bit big-endian words of `buf[start, end)` to `sum` (an odd last byte is padded). */
export function sumWords(buf: Uint8Array, start = 0, end = buf.length, sum = 0): number {
  let i = start;
  const even = end - ((end - start) & 1);
  for (; i < even; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Folds a sum of 16-bit words into 16 bits with end-around carry. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The Internet checksum of `buf[start, end)`, with `initial` (e.g. a pseudo-header sum) added. */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  return ~fold(sumWords(buf, start, end, initial)) & 0xffff;
}

/**
 * The unfolded sum of the TCP/UDP/ICMPv6 pseudo-header: source and destination addresses (4 or
 * 16 bytes each, taken from `buf` at the given offsets), the upper-layer protocol and length.
 */
export function pseudoHeaderSum(
  buf: Uint8Array,
  srcOffset: number,
  dstOffset: number,
  addrLength: 4 | 16,
  protocol: number,
  length: number,
): number {
  let sum = sumWords(buf, srcOffset, srcOffset + addrLength);
  sum = sumWords(buf, dstOffset, dstOffset + addrLength, sum);
  // IPv4: zero, protocol, 16-bit length. IPv6: 32-bit length, three zero bytes, next header.
  return sum + protocol + (length >>> 16) + (length & 0xffff);
}

/**
 * RFC 1624 eqn. 3: the checksum after 16-bit word `oldWord` became `newWord`:
 * `HC' = ~(~HC + ~m + m')`. Never yields 0xffff from a valid checksum, which keeps the
 * RFC 1624 §3 corner case (the -0 of one's complement) right.
 */
export function updateChecksumWord(checksum: number, oldWord: number, newWord: number): number {
  const sum = (~checksum & 0xffff) + (~oldWord & 0xffff) + newWord;
  return ~fold(sum) & 0xffff;
}

/**
 * The checksum after the bytes `oldBytes` were replaced by `newBytes` (same even length, same
 * word alignment in the summed data): addresses and ports of a NAT rewrite.
 */
export function updateChecksum(checksum: number, oldBytes: Uint8Array, newBytes: Uint8Array): number {
  const sum =
    (~checksum & 0xffff) + ((oldBytes.length >>> 1) * 0xffff - sumWords(oldBytes)) + sumWords(newBytes);
  return ~fold(sum) & 0xffff;
}

/**
 * `updateChecksum` from sums instead of bytes: `words` 16-bit words whose unfolded sum was
 * `oldSum` now sum to `newSum`. Lets a rewrite sum the bytes before and after in place, with no
 * copy of the old bytes.
 */
export function updateChecksumSums(checksum: number, words: number, oldSum: number, newSum: number): number {
  return ~fold((~checksum & 0xffff) + (words * 0xffff - oldSum) + newSum) & 0xffff;
}
