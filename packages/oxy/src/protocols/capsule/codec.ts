/**
 * The Capsule Protocol (RFC 9297 §3): type-length-value records on an HTTP data stream, sans-IO.
 *
 * MASQUE over HTTP/2 and HTTP/1.1 has no QUIC DATAGRAM frames, so every UDP payload and IP
 * packet travels as a DATAGRAM capsule (type 0x00) on the request stream, beside the CONNECT-IP
 * control capsules. This module frames and unframes them; `connect-ip.ts` reads the control
 * capsules' values.
 *
 * Ordering and limits:
 * - `CapsuleDecoder.push` takes the stream's chunks in order, split anywhere, and returns the
 *   capsules completed so far, in order. It holds at most one partial capsule, so its memory is
 *   bounded by `maxCapsuleSize` plus a header.
 * - A capsule whose declared length exceeds `maxCapsuleSize` is an error before any of its value
 *   is buffered (`OXY_ERR_CAPSULE_TOO_LARGE`); any error is final: the decoder stays failed and
 *   the caller must abort the stream (RFC 9297 §3.3).
 * - Types the caller did not ask for are skipped as they stream past, without being buffered
 *   (RFC 9297 §3.2: unknown capsule types are ignored).
 * - A stream that ends inside a capsule is malformed: call `end()` at the stream's end.
 */

import { OXY_ERR, OxyError } from '../../errors.ts';
import { readVarint, type VarintRead, varintLength, writeVarint } from './varint.ts';

/** Capsule types this code knows (RFC 9297 §5.4, RFC 9484 §4.7). */
export const CAPSULE_TYPE = {
  DATAGRAM: 0x00,
  ADDRESS_ASSIGN: 0x01,
  ADDRESS_REQUEST: 0x02,
  ROUTE_ADVERTISEMENT: 0x03,
} as const;

/** Default largest capsule value accepted: a 64 KiB UDP payload plus its context ID. */
export const DEFAULT_MAX_CAPSULE_SIZE = 65_536 + 8;

/** One decoded capsule: its type and its value (a view into the stream's bytes, not a copy). */
export interface Capsule {
  readonly type: number;
  readonly value: Uint8Array;
}

/** Options of {@link CapsuleDecoder}. */
export interface CapsuleDecoderOptions {
  /** Largest value length accepted, in bytes. Default {@link DEFAULT_MAX_CAPSULE_SIZE}. */
  readonly maxCapsuleSize?: number;
  /**
   * Types returned by `push`; every other type is skipped. Default: all four of
   * {@link CAPSULE_TYPE}. CONNECT-UDP passes `[CAPSULE_TYPE.DATAGRAM]`.
   */
  readonly types?: readonly number[];
}

/** Builds the error every capsule parser throws for bad input. */
export function capsuleError(message: string): OxyError {
  return new OxyError(OXY_ERR.CAPSULE_MALFORMED, message, { source: 'downstream' });
}

/**
 * An incremental capsule parser for one stream. Feed it chunks with `push`; it returns the
 * capsules each chunk completed. Throws `OXY_ERR_CAPSULE_MALFORMED` or
 * `OXY_ERR_CAPSULE_TOO_LARGE`, and after a throw every later call throws the same error.
 */
export class CapsuleDecoder {
  readonly #max: number;
  readonly #types: ReadonlySet<number>;
  readonly #scratch: VarintRead = { value: 0, length: 0 };
  /** Unconsumed bytes of a capsule that straddles chunks (header and value so far). */
  #pending: Uint8Array | undefined;
  /** Bytes still to skip of an unwanted capsule. */
  #skip = 0;
  #failed: OxyError | undefined;

  constructor(options: CapsuleDecoderOptions = {}) {
    this.#max = options.maxCapsuleSize ?? DEFAULT_MAX_CAPSULE_SIZE;
    this.#types = new Set(options.types ?? Object.values(CAPSULE_TYPE));
  }

  /** Bytes held for an incomplete capsule: never more than `maxCapsuleSize` plus 16. */
  get buffered(): number {
    return this.#pending?.length ?? 0;
  }

  /** Parses `chunk`, the next bytes of the stream, and returns the capsules it completed. */
  push(chunk: Uint8Array): Capsule[] {
    if (this.#failed !== undefined) throw this.#failed;
    const out: Capsule[] = [];
    let buf = chunk;
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, buf.length);
      this.#skip -= n;
      buf = buf.subarray(n);
    }
    if (this.#pending !== undefined && buf.length > 0) {
      const joined = new Uint8Array(this.#pending.length + buf.length);
      joined.set(this.#pending, 0);
      joined.set(buf, this.#pending.length);
      buf = joined;
      this.#pending = undefined;
    }
    try {
      let off = 0;
      while (off < buf.length) {
        const start = off;
        const t = readVarint(buf, off, this.#scratch);
        if (t.length < 0) break;
        const type = t.value;
        off += t.length;
        const l = readVarint(buf, off, this.#scratch);
        if (l.length < 0) {
          off = start;
          break;
        }
        const len = l.value;
        off += l.length;
        if (len > this.#max) {
          throw new OxyError(
            OXY_ERR.CAPSULE_TOO_LARGE,
            `capsule of type 0x${type.toString(16)} is ${len === Infinity ? 'over 2^53' : len} bytes, more than the maximum of ${this.#max}`,
            { source: 'downstream' },
          );
        }
        if (!this.#types.has(type)) {
          const here = Math.min(len, buf.length - off);
          off += here;
          this.#skip = len - here;
          continue;
        }
        if (off + len > buf.length) {
          off = start;
          break;
        }
        out.push({ type, value: buf.subarray(off, off + len) });
        off += len;
      }
      // Copy the tail: the caller may reuse its chunk, and a view would pin the whole chunk.
      // (Not `buf.slice`: on a Buffer that is a view.)
      if (off < buf.length) {
        this.#pending = new Uint8Array(buf.length - off);
        this.#pending.set(buf.subarray(off));
      }
    } catch (e) {
      this.#failed = e as OxyError;
      this.#pending = undefined;
      throw e;
    }
    return out;
  }

  /** Call at the stream's end: throws if the stream stopped inside a capsule. */
  end(): void {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#pending !== undefined || this.#skip > 0) {
      this.#failed = capsuleError('stream ended inside a capsule');
      throw this.#failed;
    }
  }
}

/** Frames `value` as one capsule of `type`. */
export function encodeCapsule(type: number, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(type) + varintLength(value.length) + value.length);
  let off = writeVarint(out, 0, type);
  off = writeVarint(out, off, value.length);
  out.set(value, off);
  return out;
}

/** An HTTP Datagram as MASQUE uses it (RFC 9298 §5, RFC 9484 §6): a context ID and a payload. */
export interface MasqueDatagram {
  /** 0 for UDP payloads (CONNECT-UDP) and IP packets (CONNECT-IP). */
  readonly contextId: number;
  readonly payload: Uint8Array;
}

/**
 * Frames `payload` as a DATAGRAM capsule carrying `contextId` (default 0), in one allocation:
 * `type 0x00, length, context ID, payload`.
 */
export function encodeDatagramCapsule(payload: Uint8Array, contextId = 0): Uint8Array {
  const valueLength = varintLength(contextId) + payload.length;
  const out = new Uint8Array(1 + varintLength(valueLength) + valueLength);
  out[0] = CAPSULE_TYPE.DATAGRAM;
  let off = writeVarint(out, 1, valueLength);
  off = writeVarint(out, off, contextId);
  out.set(payload, off);
  return out;
}

const datagramScratch: VarintRead = { value: 0, length: 0 };

/**
 * Reads a DATAGRAM capsule's value as a context ID and a payload (a view, not a copy). A
 * context ID above 2^53-1 reads as `Infinity`: no such context is ever registered, so callers
 * drop it like any unknown context (RFC 9298 §5).
 */
export function decodeDatagramCapsule(value: Uint8Array): MasqueDatagram {
  const r = readVarint(value, 0, datagramScratch);
  if (r.length < 0) throw capsuleError('DATAGRAM capsule too short for its context ID');
  return { contextId: r.value, payload: value.subarray(r.length) };
}
