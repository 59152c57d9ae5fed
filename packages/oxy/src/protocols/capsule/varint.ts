/**
 * QUIC variable-length integers (RFC 9000 §16), the number format of every capsule field.
 *
 * The two high bits of the first byte give the length (1, 2, 4 or 8 bytes); the rest is the
 * value, big-endian, up to 2^62-1. Encoders always pick the shortest form; decoders accept any
 * form (RFC 9000 allows non-minimal encodings, and RFC 9297 does not forbid them in capsules).
 *
 * Capsule code works in `number`: types, lengths, context IDs and request IDs. A value above
 * 2^53-1 cannot be a number exactly, so `readVarint` reports it as `Infinity` and each caller
 * decides (an unknown capsule type is skipped, a length is too large, a request ID is refused).
 * `readVarintBig` and `encodeVarint` with a bigint cover the whole range.
 *
 * Sans-IO and allocation-free on the read path: readers take a buffer and an offset and return
 * `-1` as the length when the buffer ends inside the integer, so an incremental decoder can wait.
 */

import { OXY_ERR, OxyError } from '../../errors.ts';

/** The largest value a varint can carry, 2^62-1. */
export const VARINT_MAX = (1n << 62n) - 1n;

/** The result of a read: the value and how many bytes it took (`length: -1` when truncated). */
export interface VarintRead {
  value: number;
  length: number;
}

/** How many bytes the shortest encoding of `value` takes (1, 2, 4 or 8). */
export function varintLength(value: number | bigint): 1 | 2 | 4 | 8 {
  const v = typeof value === 'bigint' ? value : BigInt(checkNumber(value));
  if (v < 0n || v > VARINT_MAX) throw rangeError(v);
  if (v < 0x40n) return 1;
  if (v < 0x4000n) return 2;
  if (v < 0x40000000n) return 4;
  return 8;
}

/**
 * Writes the shortest encoding of `value` into `out` at `offset` and returns the offset after
 * it. Throws `OXY_ERR_CAPSULE_MALFORMED` for a negative, fractional or too large value.
 */
export function writeVarint(out: Uint8Array, offset: number, value: number | bigint): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 0x40000000) {
    if (value < 0x40) {
      out[offset] = value;
      return offset + 1;
    }
    if (value < 0x4000) {
      out[offset] = 0x40 | (value >>> 8);
      out[offset + 1] = value & 0xff;
      return offset + 2;
    }
    out[offset] = 0x80 | (value >>> 24);
    out[offset + 1] = (value >>> 16) & 0xff;
    out[offset + 2] = (value >>> 8) & 0xff;
    out[offset + 3] = value & 0xff;
    return offset + 4;
  }
  let v = typeof value === 'bigint' ? value : BigInt(checkNumber(value));
  const n = varintLength(v);
  for (let i = n - 1; i >= 0; i--) {
    out[offset + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  out[offset] = (out[offset]! & 0x3f) | (n === 8 ? 0xc0 : n === 4 ? 0x80 : n === 2 ? 0x40 : 0);
  return offset + n;
}

/** The shortest encoding of `value` as a new array. */
export function encodeVarint(value: number | bigint): Uint8Array {
  const out = new Uint8Array(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

/**
 * Reads a varint at `offset` into `into` (reused by hot callers to avoid allocation). Sets
 * `length` to -1 when `buf` ends before the integer does, and `value` to `Infinity` when the
 * value exceeds 2^53-1.
 */
export function readVarint(buf: Uint8Array, offset: number, into: VarintRead): VarintRead {
  if (offset >= buf.length) {
    into.length = -1;
    return into;
  }
  const first = buf[offset]!;
  const n = 1 << (first >>> 6);
  if (offset + n > buf.length) {
    into.length = -1;
    return into;
  }
  into.length = n;
  if (n === 1) into.value = first;
  else if (n === 2) into.value = ((first & 0x3f) << 8) | buf[offset + 1]!;
  else if (n === 4)
    into.value =
      (first & 0x3f) * 0x1000000 + ((buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!);
  else {
    const hi =
      (first & 0x3f) * 0x1000000 + ((buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!);
    // 2^53 = 2^21 * 2^32: a high word at or above 2^21 cannot be represented exactly.
    if (hi >= 0x200000) into.value = Number.POSITIVE_INFINITY;
    else
      into.value =
        hi * 0x100000000 +
        (buf[offset + 4]! * 0x1000000 +
          ((buf[offset + 5]! << 16) | (buf[offset + 6]! << 8) | buf[offset + 7]!));
  }
  return into;
}

/** Reads a varint of any size as a bigint; `undefined` when `buf` ends inside it. */
export function readVarintBig(buf: Uint8Array, offset = 0): { value: bigint; length: number } | undefined {
  if (offset >= buf.length) return undefined;
  const n = 1 << (buf[offset]! >>> 6);
  if (offset + n > buf.length) return undefined;
  let v = BigInt(buf[offset]! & 0x3f);
  for (let i = 1; i < n; i++) v = (v << 8n) | BigInt(buf[offset + i]!);
  return { value: v, length: n };
}

function checkNumber(value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new OxyError(
      OXY_ERR.CAPSULE_MALFORMED,
      `varint value must be a safe non-negative integer, got ${value}`,
    );
  }
  return value;
}

function rangeError(v: bigint): OxyError {
  return new OxyError(OXY_ERR.CAPSULE_MALFORMED, `varint value out of range 0..2^62-1: ${v}`);
}
