/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as RFC 4960 Appendix B and the PROXY v2
 * CRC32C TLV use it. Written here rather than taken from a dependency: it is a dozen lines, and
 * the table-driven form is fast enough for headers of a few hundred bytes.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * The CRC32C of `bytes[start, end)`, as an unsigned 32-bit number. `zeroAt`, when given, is the
 * offset of 4 bytes that count as zeros (the checksum field of the header being checked), so
 * the caller need not copy the header to blank it.
 */
export function crc32c(bytes: Uint8Array, start = 0, end = bytes.length, zeroAt = -1): number {
  let crc = 0xffffffff;
  const zeroEnd = zeroAt < 0 ? -1 : zeroAt + 4;
  for (let i = start; i < end; i++) {
    const b = i >= zeroAt && i < zeroEnd ? 0 : bytes[i]!;
    crc = TABLE[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
