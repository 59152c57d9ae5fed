/**
 * Reads the bytes an HTTP/2 client sends, before nghttp2 does, to find the streams whose
 * fields make the request malformed (RFC 9113 §8.2.1): a value with CR, LF or NUL, or with
 * leading or trailing whitespace, and a name that is not lowercase token characters. nghttp2
 * reports such a field to Node, which drops it silently and passes the rest of the request on;
 * this scanner lets the on-ramp reset the stream instead (`field-guard.ts`).
 *
 * Sans-IO: `push` takes the client's bytes in any chunking. It parses the 24-byte preface, then
 * frame headers; it skips every payload except HEADERS and CONTINUATION, whose header block
 * fragments go through one HPACK decoder per connection (the dynamic table must stay in step
 * with the client's encoder, so every block is decoded, also of streams already condemned).
 * A representation cut between two frames is held until the next fragment; nothing else is
 * buffered beyond one HEADERS frame's payload (at most SETTINGS_MAX_FRAME_SIZE).
 *
 * Ordering rules: `onMalformed(streamId)` is called at most once per header block, during the
 * `push` that carries the offending field, so before those bytes reach nghttp2. A block the
 * decoder cannot read (an HPACK error, which nghttp2 answers with COMPRESSION_ERROR on the whole
 * connection) stops the scanner for good: `push` throws the typed error once, then ignores input.
 */
import { OXY_ERR, OxyError } from '../../errors.ts';
import { HpackDecoder, type HpackField, MAX_STRING } from '../../protocols/hpack/decoder.ts';

const PREFACE_LENGTH = 24;
const HEADERS = 0x1;
const CONTINUATION = 0x9;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

// Name octets allowed (RFC 9110 tchar, lowercase only as RFC 9113 §8.2.1 requires).
const NAME_OK = ((): Uint8Array => {
  const ok = new Uint8Array(256);
  for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") ok[c.charCodeAt(0)] = 1;
  return ok;
})();

/** Why `field` makes a request malformed, or null when it does not. */
export function fieldProblem(field: HpackField): string | null {
  const { name, value } = field;
  const start = name.charCodeAt(0) === 0x3a ? 1 : 0; // a pseudo-header's leading colon
  if (name.length === start) return 'empty field name';
  for (let i = start; i < name.length; i++) {
    if (NAME_OK[name.charCodeAt(i)] !== 1) return 'field name with a character other than lowercase tchar';
  }
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x0d || c === 0x0a || c === 0x00) return 'field value with CR, LF or NUL';
  }
  if (value.length > 0) {
    const first = value.charCodeAt(0);
    const last = value.charCodeAt(value.length - 1);
    if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) {
      return 'field value with leading or trailing whitespace';
    }
  }
  return null;
}

/** Called once per header block that carries a field making its stream's message malformed. */
export type MalformedListener = (streamId: number, reason: string) => void;

/** The scanner of one connection's client-to-server bytes. */
export class FieldScanner {
  readonly #onMalformed: MalformedListener;
  readonly #decoder: HpackDecoder;
  readonly #maxFrame: number;
  #preface = PREFACE_LENGTH;
  readonly #head = Buffer.alloc(9);
  #headFill = 0;
  /** Payload bytes of the current frame still to come (-1 while reading a frame header). */
  #remaining = -1;
  #type = 0;
  #flags = 0;
  #stream = 0;
  /** The current HEADERS or CONTINUATION payload, gathered. */
  #payload: Buffer[] = [];
  /** Bytes of the current header block not yet decoded (a representation cut by a frame end). */
  #pending: Buffer = Buffer.alloc(0);
  #blockStream = 0;
  #blockBad = false;
  #stopped = false;

  /**
   * `headerTableSize` is the SETTINGS_HEADER_TABLE_SIZE the server advertised (nghttp2's 4096
   * unless set), `maxFrameSize` its SETTINGS_MAX_FRAME_SIZE (a bigger HEADERS frame stops the
   * scanner; nghttp2 closes that connection with FRAME_SIZE_ERROR).
   */
  constructor(onMalformed: MalformedListener, headerTableSize = 4096, maxFrameSize = 16_384) {
    this.#onMalformed = onMalformed;
    this.#decoder = new HpackDecoder(headerTableSize);
    this.#maxFrame = maxFrameSize;
  }

  /** True once the scanner gave up on the connection (it ignores further input). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Scans `chunk`. Throws `OXY_ERR_HPACK_MALFORMED` once if the client broke HPACK or framing. */
  push(chunk: Buffer): void {
    if (this.#stopped) return;
    try {
      this.#scan(chunk);
    } catch (e) {
      this.#stopped = true;
      this.#payload = [];
      this.#pending = Buffer.alloc(0);
      throw e;
    }
  }

  #scan(chunk: Buffer): void {
    let at = 0;
    if (this.#preface > 0) {
      const n = Math.min(this.#preface, chunk.length);
      this.#preface -= n;
      at = n;
    }
    while (at < chunk.length) {
      if (this.#remaining < 0) {
        const n = Math.min(9 - this.#headFill, chunk.length - at);
        chunk.copy(this.#head, this.#headFill, at, at + n);
        this.#headFill += n;
        at += n;
        if (this.#headFill < 9) return;
        this.#headFill = 0;
        this.#remaining = this.#head.readUIntBE(0, 3);
        this.#type = this.#head[3] as number;
        this.#flags = this.#head[4] as number;
        this.#stream = this.#head.readUInt32BE(5) & 0x7fffffff;
        if (this.#isHeaderFrame() && this.#remaining > this.#maxFrame) {
          throw new OxyError(OXY_ERR.HPACK_MALFORMED, 'HTTP/2: header frame above SETTINGS_MAX_FRAME_SIZE', {
            source: 'downstream',
          });
        }
        if (this.#remaining === 0) this.#frameDone();
        continue;
      }
      const n = Math.min(this.#remaining, chunk.length - at);
      if (this.#isHeaderFrame()) this.#payload.push(chunk.subarray(at, at + n));
      at += n;
      this.#remaining -= n;
      if (this.#remaining === 0) this.#frameDone();
    }
  }

  #isHeaderFrame(): boolean {
    return this.#type === HEADERS || this.#type === CONTINUATION;
  }

  #frameDone(): void {
    this.#remaining = -1;
    if (!this.#isHeaderFrame()) return;
    const payload = this.#payload.length === 1 ? (this.#payload[0] as Buffer) : Buffer.concat(this.#payload);
    this.#payload = [];
    let fragment = payload;
    if (this.#type === HEADERS) {
      let start = 0;
      let end = payload.length;
      if (this.#flags & PADDED) {
        end -= payload[0] ?? 0;
        start = 1;
      }
      if (this.#flags & PRIORITY) start += 5;
      // nghttp2 ends the connection for padding longer than the payload; so does the scanner.
      if (start > end)
        throw new OxyError(OXY_ERR.HPACK_MALFORMED, 'HTTP/2: bad HEADERS padding', { source: 'downstream' });
      fragment = payload.subarray(start, end);
      this.#blockStream = this.#stream;
      this.#blockBad = false;
    }
    this.#fragment(fragment);
    if (this.#flags & END_HEADERS) {
      this.#decoder.endBlock();
      if (this.#pending.length > 0) {
        throw new OxyError(OXY_ERR.HPACK_MALFORMED, 'HPACK: header block ends inside a field', {
          source: 'downstream',
        });
      }
    }
  }

  #fragment(fragment: Buffer): void {
    const buf = this.#pending.length === 0 ? fragment : Buffer.concat([this.#pending, fragment]);
    const used = this.#decoder.decodeSome(buf, (field) => {
      if (this.#blockBad) return;
      const problem = fieldProblem(field);
      if (problem === null) return;
      this.#blockBad = true;
      this.#onMalformed(this.#blockStream, problem);
    });
    // Copied: the chunk it points into belongs to the socket and moves on to nghttp2.
    this.#pending = used === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(used));
    // One representation is at most two strings of MAX_STRING plus their prefixes; more held
    // back means a string nghttp2 refuses too (it ends the connection).
    if (this.#pending.length > 4 * MAX_STRING) {
      throw new OxyError(OXY_ERR.HPACK_MALFORMED, 'HPACK: field too long', { source: 'downstream' });
    }
  }
}
