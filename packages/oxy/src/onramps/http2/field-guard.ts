/**
 * The strict-fields guard of the HTTP/2 on-ramp (RFC 9113 §8.2.1). Node gives nghttp2 an
 * "invalid header" callback that ignores the field (node_http2.cc `OnInvalidHeader`), and no
 * option turns that off (`strictFieldWhitespaceValidation` only chooses which whitespace is
 * invalid), so a request with `x: a\r\nb` reaches JavaScript without that field and would be
 * forwarded. The guard reads the client's bytes first (`FieldScanner`), remembers the streams
 * whose header block carries a malformed field, and the on-ramp resets them with PROTOCOL_ERROR
 * when Node announces them: such a request never reaches a hook or an upstream, and the other
 * streams of the connection go on.
 *
 * Cost: the socket is read in JavaScript and handed to nghttp2 through Node's JS stream
 * wrapper instead of natively (measured in docs/limits.md); `http2.strict_fields: false` turns
 * the guard off and restores native reading (and nghttp2's silent drop).
 *
 * Ordering rules: the scanner sees each chunk before nghttp2 does (`GuardedSocket` pushes a
 * chunk on only after scanning it), so a stream is marked before its 'stream' event. Streams
 * announce in id order (header blocks cannot interleave), so marks below an announced id are
 * stale (nghttp2 refused those streams itself) and are dropped. A mark for a stream already
 * announced (malformed trailers) resets it at once.
 */

import type net from 'node:net';
import { Duplex } from 'node:stream';
import { FieldScanner } from './field-scanner.ts';

/** Streams marked and not yet announced, beyond which the connection is ended. */
const MAX_MARKS = 65_536;

/** The marks of one connection, shared by the socket wrapper and the on-ramp's stream handler. */
export class FieldGuard {
  readonly #marked: number[] = [];
  readonly #open = new Map<number, { close(code: number): void }>();
  #announced = 0;
  /** Called once if the client broke HPACK or framing (the scanner stopped; end the connection). */
  onBroken: ((e: Error) => void) | null = null;
  /** Called for a stream already announced whose later header block (trailers) is malformed. */
  onLateMark: ((streamId: number, reason: string) => void) | null = null;

  /** Records that `streamId`'s current header block is malformed. */
  mark(streamId: number, reason: string): void {
    if (streamId <= this.#announced) {
      if (this.#open.has(streamId)) this.onLateMark?.(streamId, reason);
      return;
    }
    // Marks wait at most one chunk for their stream (nghttp2 announces or refuses it then);
    // this many waiting means a client sending little else than malformed header blocks.
    if (this.#marked.length >= MAX_MARKS) {
      this.onBroken?.(new Error('too many malformed header blocks'));
      return;
    }
    this.#marked.push(streamId);
  }

  /**
   * Called for each stream Node announces, before anything else looks at it: true when the
   * stream must be reset as malformed. Otherwise `stream` is remembered until `forget`.
   */
  announce(streamId: number, stream: { close(code: number): void }): boolean {
    this.#announced = Math.max(this.#announced, streamId);
    while (this.#marked.length > 0 && (this.#marked[0] as number) < streamId) this.#marked.shift();
    if (this.#marked[0] === streamId) {
      this.#marked.shift();
      return true;
    }
    this.#open.set(streamId, stream);
    return false;
  }

  /** The stream closed. */
  forget(streamId: number): void {
    this.#open.delete(streamId);
  }

  /** Resets `streamId` with `code` when it is still open; false when it is not. */
  reset(streamId: number, code: number): boolean {
    const s = this.#open.get(streamId);
    if (s === undefined) return false;
    this.#open.delete(streamId);
    s.close(code);
    return true;
  }
}

/**
 * A duplex over `socket` that scans every chunk the client sends with a `FieldScanner` before
 * passing it on; writes go straight to `socket`. Address getters mirror the socket's, for
 * Node's `session.socket` proxy.
 */
export class GuardedSocket extends Duplex {
  readonly #socket: net.Socket;

  constructor(socket: net.Socket, guard: FieldGuard, headerTableSize: number, maxFrameSize: number) {
    super({ allowHalfOpen: false });
    this.#socket = socket;
    const scanner = new FieldScanner((id, reason) => guard.mark(id, reason), headerTableSize, maxFrameSize);
    socket.on('data', (chunk: Buffer) => {
      if (scanner.stopped) return;
      try {
        scanner.push(chunk);
      } catch (e) {
        // nghttp2 refuses the same bytes (COMPRESSION_ERROR or FRAME_SIZE_ERROR); the bytes
        // go no further and the on-ramp ends the connection rather than serve it unguarded.
        guard.onBroken?.(e as Error);
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (e) => this.destroy(e));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    if (this.#socket.write(chunk)) done();
    else this.#socket.once('drain', () => done());
  }

  override _writev(chunks: { chunk: Buffer }[], done: (e?: Error | null) => void): void {
    this.#socket.cork();
    let ok = true;
    for (const c of chunks) ok = this.#socket.write(c.chunk);
    this.#socket.uncork();
    if (ok) done();
    else this.#socket.once('drain', () => done());
  }

  override _final(done: (e?: Error | null) => void): void {
    this.#socket.end();
    done();
  }

  override _destroy(e: Error | null, done: (e?: Error | null) => void): void {
    this.#socket.destroy();
    done(e);
  }

  get remoteAddress(): string | undefined {
    return this.#socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.#socket.remotePort;
  }
  get remoteFamily(): string | undefined {
    return this.#socket.remoteFamily;
  }
  get localAddress(): string | undefined {
    return this.#socket.localAddress;
  }
  get localPort(): number | undefined {
    return this.#socket.localPort;
  }
  setNoDelay(on?: boolean): this {
    this.#socket.setNoDelay(on);
    return this;
  }
  setKeepAlive(on?: boolean, delay?: number): this {
    this.#socket.setKeepAlive(on, delay);
    return this;
  }
  setTimeout(ms: number, cb?: () => void): this {
    this.#socket.setTimeout(ms, cb);
    return this;
  }
}
