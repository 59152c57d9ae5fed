/**
 * The incremental PROXY header decoder for streams: it takes the bytes of a connection in
 * whatever pieces the reads deliver (one byte at a time is fine), answers "more" until a whole
 * header has arrived, then the header and the bytes that followed it in the last piece.
 *
 * Ordering rules: the version is chosen by the first byte (`P` for v1, CR for v2), and each
 * piece is checked as soon as it arrives, so a peer that is not speaking PROXY is refused on
 * its first bytes; a v2 length over the limit is refused from the fixed part alone. The buffer
 * never holds more than the limit (107 bytes for v1, `maxV2Length` for v2) plus the last piece.
 * After a failure every later call throws the same error.
 */
import { copyBytes } from './tlv.ts';
import {
  PROXY_V2_DEFAULT_MAX_LENGTH,
  PROXY_V2_FIXED_LENGTH,
  type ProxyHeader,
  ProxyProtocolError,
} from './types.ts';
import { decodeV1, v1LineLength } from './v1.ts';
import { checkV2SignaturePrefix, decodeV2, decodeV2Fixed } from './v2.ts';

/** What {@link ProxyHeaderDecoder.push} answers. */
export type DecodeStep =
  | { readonly kind: 'more' }
  | {
      readonly kind: 'done';
      readonly header: ProxyHeader;
      /** The bytes after the header in the data pushed so far (a view, possibly empty). */
      readonly rest: Uint8Array;
    };

const MORE: DecodeStep = Object.freeze({ kind: 'more' });

/** Options of the stream decoder and of {@link decodeProxyHeader}. */
export interface ProxyDecodeOptions {
  /** Largest v2 header accepted, fixed part included. Default 4096. */
  readonly maxV2Length?: number;
}

/**
 * Tries to decode a header at the start of `bytes`. Returns the header and its length, or
 * `null` when `bytes` is a valid beginning that needs more bytes. Throws a
 * {@link ProxyProtocolError} as soon as the bytes cannot begin a valid header.
 */
function tryDecode(bytes: Uint8Array, maxV2Length: number): ProxyHeader | null {
  if (bytes.length === 0) return null;
  const first = bytes[0];
  if (first === 0x50) {
    return v1LineLength(bytes) < 0 ? null : decodeV1(bytes);
  }
  if (first === 0x0d) {
    checkV2SignaturePrefix(bytes);
    if (bytes.length < PROXY_V2_FIXED_LENGTH) return null;
    const { total } = decodeV2Fixed(bytes, maxV2Length);
    return bytes.length < total ? null : decodeV2(bytes, { maxLength: maxV2Length });
  }
  throw new ProxyProtocolError('bad_signature', `first byte 0x${(first ?? 0).toString(16)}`);
}

/**
 * Decodes a header from complete input (a datagram, or a buffer known to hold the whole
 * header): the header and a view of the bytes after it. Throws `truncated` when the input
 * ends inside the header, and any other {@link ProxyProtocolError} it meets.
 */
export function decodeProxyHeader(
  bytes: Uint8Array,
  options: ProxyDecodeOptions = {},
): { readonly header: ProxyHeader; readonly rest: Uint8Array } {
  const header = tryDecode(bytes, options.maxV2Length ?? PROXY_V2_DEFAULT_MAX_LENGTH);
  if (header === null) throw new ProxyProtocolError('truncated', 'the input ends inside the header');
  return { header, rest: bytes.subarray(header.length) };
}

/** A PROXY header decoder for one stream (v1 or v2, whichever the first byte says). */
export class ProxyHeaderDecoder {
  readonly #maxV2Length: number;
  #buf: Uint8Array = new Uint8Array(0);
  #failed: ProxyProtocolError | null = null;
  #done = false;

  constructor(options: ProxyDecodeOptions = {}) {
    this.#maxV2Length = options.maxV2Length ?? PROXY_V2_DEFAULT_MAX_LENGTH;
  }

  /** Bytes held while waiting for the rest of the header. */
  get buffered(): number {
    return this.#buf.length;
  }

  /**
   * Adds the next piece of the stream. Returns `more` until the header is complete, then
   * `done` once. Throws a {@link ProxyProtocolError} when the bytes cannot be a valid header
   * (and again on every later call); throws a `TypeError` if called after `done`.
   */
  push(chunk: Uint8Array): DecodeStep {
    if (this.#failed !== null) throw this.#failed;
    if (this.#done) throw new TypeError('ProxyHeaderDecoder: push after the header was decoded');
    let buf = chunk;
    if (this.#buf.length > 0) {
      buf = new Uint8Array(this.#buf.length + chunk.length);
      buf.set(this.#buf, 0);
      buf.set(chunk, this.#buf.length);
    }
    let header: ProxyHeader | null;
    try {
      header = tryDecode(buf, this.#maxV2Length);
    } catch (e) {
      this.#buf = new Uint8Array(0);
      if (e instanceof ProxyProtocolError) this.#failed = e;
      throw e;
    }
    if (header === null) {
      // Copy: the caller may reuse its chunk's memory.
      this.#buf = buf === chunk ? copyBytes(chunk, 0, chunk.length) : buf;
      return MORE;
    }
    this.#buf = new Uint8Array(0);
    this.#done = true;
    return { kind: 'done', header, rest: buf.subarray(header.length) };
  }

  /**
   * The stream ended. Throws `truncated` when it ended inside a header (or before any byte);
   * does nothing after `done`.
   */
  end(): void {
    if (this.#done) return;
    if (this.#failed !== null) throw this.#failed;
    const held = this.#buf.length;
    this.#buf = new Uint8Array(0);
    this.#failed = new ProxyProtocolError('truncated', `the stream ended after ${held} header bytes`);
    throw this.#failed;
  }
}
