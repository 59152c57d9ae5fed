/**
 * Socket writes made off the JS thread. On the lean HTTP/1.1 paths a forwarded request costs
 * two small writes (the request head upstream, the response to the client), and each write(2)
 * runs the kernel's whole TCP transmit path, on loopback the receiver's too, in the caller: a
 * third of the JS thread's time. A socket given to {@link offloadWrites} writes through the
 * native addon's `SocketWriter` instead: the bytes are copied into a queue and the addon's
 * reactor thread writes them, in order.
 *
 * Everything that writes to the socket keeps working unchanged: the socket's own `_write`,
 * `_writev` and `_final` are replaced, so `write()`, `cork()`, `end()`, `destroySoon()` and
 * whoever takes the socket over later (a CONNECT answer, an upgraded stream) go through the
 * same queue in order. Backpressure holds: a write is acknowledged at
 * once while less than {@link HIGH_WATER} is queued, and after the queue has drained otherwise,
 * so `write()` returns false and 'drain' comes as for any socket. `end()` becomes a
 * shutdown(SHUT_WR) after the queue. The writer holds a duplicate of the descriptor and is
 * closed with the socket ('close'), after what it holds is written. Reads are untouched.
 *
 * A small write ({@link INLINE_LIMIT} or less) with nothing queued before it is made at once on
 * the JS thread, from the caller's memory (`SocketWriter.trySend`): a forwarded request's head
 * and a small response cost the write(2) and nothing else: no `WriteWrap`, no after-write tick,
 * no copy, and no wake-up of the reactor thread, which would cost more than the write itself
 * (twice on a machine with no spare core). Only what the socket does not take at once goes to
 * the reactor thread's queue; large writes go there whole.
 *
 * Whoever hands the descriptor itself to other code that writes (the kernel splice) waits for
 * {@link writesFlushed} first and then stops offloading ({@link stopOffload}).
 *
 * Not used (the socket writes as usual) without the addon, for TLS sockets, sockets without a
 * descriptor, or a socket Node still holds writes for.
 */
import net from 'node:net';
import { type Native, native } from './native-addon.ts';

type SocketWriter = InstanceType<Native['SocketWriter']>;

/** Queued bytes above which a write is acknowledged only once the queue has drained. */
export const HIGH_WATER = 64 * 1024;

/** Writes of at most this many bytes are made on the JS thread when nothing is queued. */
export const INLINE_LIMIT = 64 * 1024;

const kWriter = Symbol('oxy.offloadWriter');
const kSent = Symbol('oxy.offloadSent');
const kOnWriteFailure = Symbol('oxy.offloadOnWriteFailure');

type Socket = net.Socket & {
  [kWriter]?: SocketWriter | null;
  [kSent]?: number;
  [kOnWriteFailure]?: (e: Error) => void;
  _handle: { fd?: number } | null;
  encrypted?: boolean;
};

type WriteCb = (err?: Error | null) => void;

/**
 * From now on, `socket`'s writes are made on the addon's reactor thread. False (nothing
 * changed) when that cannot be: no addon, TLS, no descriptor, or writes Node still holds.
 */
export function offloadWrites(socket: net.Socket): boolean {
  const s = socket as Socket;
  if (s[kWriter] != null) return true;
  if (native === null || s.encrypted === true || s.destroyed || s.connecting) return false;
  const fd = s._handle?.fd;
  if (typeof fd !== 'number' || fd < 0 || s.writableLength > 0 || s.writableCorked > 0) return false;
  try {
    s[kWriter] = new native.SocketWriter(fd);
  } catch {
    return false; // e.g. out of descriptors: Node's own writes serve
  }
  s[kSent] ??= 0;
  s._write = writeOne;
  s._writev = writeMany;
  s._final = finalOne;
  s.once('close', closeWriter);
  return true;
}

/**
 * Makes a failed write on offloaded `socket` (the peer reset) call `fn` instead of destroying
 * the socket; the writes after it are acknowledged and dropped. The read side stays open, so
 * what the peer sent before it reset can still be read: an upstream that answers a request
 * early and closes without reading the rest of its body (its kernel then resets). The caller
 * destroys the socket once it read what it needs.
 */
export function onWriteFailure(socket: net.Socket, fn: (e: Error) => void): void {
  (socket as Socket)[kOnWriteFailure] = fn;
}

/** A write failed: the socket's handler learns it, or the socket is destroyed. */
function writeFailed(s: Socket, e: Error): void {
  const fn = s[kOnWriteFailure];
  if (fn === undefined) s.destroy(e);
  else fn(e);
}

/**
 * Writes `data` on an offloaded socket straight into its queue when nothing is buffered in
 * front of it (the common case), else through `socket.write`. For the lean paths' one-write
 * messages: no stream machinery per message.
 */
export function writeDirect(socket: net.Socket, data: Buffer | string, encoding: 'latin1' | 'utf8'): void {
  const s = socket as Socket;
  const w = s[kWriter];
  if (w == null || s.writableLength > 0 || s.writableCorked > 0 || !s.writable) {
    if (typeof data === 'string') s.write(data, encoding);
    else s.write(data);
    return;
  }
  const n = send(s, w, data, encoding, data.length <= INLINE_LIMIT);
  // Past the mark, later writes are held in the stream (corked) until the queue has drained;
  // a failed queue (the peer reset) destroys the socket, as a failed write would.
  if (n >= HIGH_WATER) {
    s.cork();
    const drained = (): void => {
      const e = w.error;
      if (e !== null) writeFailed(s, e);
      else s.uncork();
    };
    if (w.drained(drained)) drained();
  } else if (n < 0 || (n === 0 && data.length > INLINE_LIMIT)) {
    // -1: an inline write failed (the peer reset); 0 from a queued send may be a drop too.
    const e = w.error;
    if (e !== null) writeFailed(s, e);
  }
}

/** True when `socket`'s writes are made on the reactor thread. */
export function isOffloaded(socket: net.Socket): boolean {
  return (socket as Socket)[kWriter] != null;
}

/** Bytes written through the writer (not counted in `socket.bytesWritten`). */
export function offloadedBytes(socket: net.Socket): number {
  return (socket as Socket)[kSent] ?? 0;
}

/** Null if `socket` writes as usual or has nothing queued; else resolves once its queue is written. */
export function writesFlushed(socket: net.Socket): Promise<void> | null {
  const w = (socket as Socket)[kWriter];
  if (w == null) return null;
  return new Promise<void>((resolve) => {
    if (w.drained(resolve)) resolve();
  });
}

/** Stops offloading `socket`'s writes (call once {@link writesFlushed} resolved); Node writes again. */
export function stopOffload(socket: net.Socket): void {
  const s = socket as Socket;
  const w = s[kWriter];
  if (w == null) return;
  s[kWriter] = null;
  w.close();
  s.off('close', closeWriter);
  const proto = net.Socket.prototype as unknown as Socket;
  s._write = proto._write;
  s._writev = proto._writev;
  s._final = proto._final;
}

function writerOf(s: Socket): SocketWriter {
  return s[kWriter] as SocketWriter;
}

/** Queues (or, `inline`, tries to write at once) one chunk; the bytes queued after it. */
function send(
  s: Socket,
  w: SocketWriter,
  chunk: Buffer | string,
  encoding: BufferEncoding,
  inline: boolean,
): number {
  if (typeof chunk !== 'string') {
    s[kSent] = (s[kSent] as number) + chunk.length;
    return inline ? w.trySend(chunk) : w.send(chunk);
  }
  if (encoding === 'latin1' || encoding === 'binary' || encoding === 'utf8' || encoding === 'utf-8') {
    const enc = encoding === 'latin1' || encoding === 'binary' ? 'latin1' : 'utf8';
    s[kSent] = (s[kSent] as number) + (enc === 'latin1' ? chunk.length : Buffer.byteLength(chunk, enc));
    return inline ? w.trySend(chunk, enc) : w.send(chunk, enc);
  }
  const b = Buffer.from(chunk, encoding);
  s[kSent] = (s[kSent] as number) + b.length;
  return inline ? w.trySend(b) : w.send(b);
}

/**
 * Acknowledges a write now, or once the queue has drained when it is past the mark. A write
 * the reactor failed (the peer reset) fails the stream, so the socket is destroyed and whoever
 * feeds it (a response from upstream) learns the client is gone, even if Node is not reading;
 * with {@link onWriteFailure}, its handler learns it instead and the write is acknowledged.
 */
function ack(s: Socket, w: SocketWriter, queued: number, cb: WriteCb, inline: boolean): void {
  const done = (e: Error | null): void => {
    if (e === null || s[kOnWriteFailure] === undefined) cb(e ?? undefined);
    else {
      writeFailed(s, e);
      cb();
    }
  };
  if (queued < HIGH_WATER) {
    // An inline write says -1 when the socket failed; a queued one says 0, as when all is written.
    done(queued < 0 || (queued === 0 && !inline) ? w.error : null);
    return;
  }
  if (w.drained(() => done(w.error))) done(w.error);
}

function writeOne(this: Socket, chunk: Buffer | string, encoding: BufferEncoding, cb: WriteCb): void {
  const w = writerOf(this);
  const inline = chunk.length <= INLINE_LIMIT;
  ack(this, w, send(this, w, chunk, encoding, inline), cb, inline);
}

function writeMany(
  this: Socket,
  chunks: { chunk: Buffer | string; encoding: BufferEncoding }[],
  cb: WriteCb,
): void {
  const w = writerOf(this);
  let total = 0;
  for (const c of chunks) total += c.chunk.length;
  if (total <= INLINE_LIMIT) {
    // A corked message (a chunk with its framing): one write, as Node's writev would make it.
    const parts = chunks.map((c) =>
      typeof c.chunk === 'string' ? Buffer.from(c.chunk, c.encoding) : c.chunk,
    );
    ack(this, w, send(this, w, Buffer.concat(parts), 'latin1', true), cb, true);
    return;
  }
  let queued = 0;
  for (const c of chunks) queued = send(this, w, c.chunk, c.encoding, false);
  ack(this, w, queued, cb, false);
}

function finalOne(this: Socket, cb: WriteCb): void {
  writerOf(this).end();
  cb();
}

function closeWriter(this: Socket): void {
  const w = this[kWriter];
  this[kWriter] = null;
  w?.close();
}
