/**
 * The JS half of writer.c: writes to a socket made on the addon's reactor thread. A small
 * write(2) on a TCP socket costs the caller the whole kernel transmit path (on loopback, the
 * receiver's too); a proxy answering small requests spends a third of its time there. A
 * `SocketWriter` copies the bytes into a queue and returns; the reactor thread writes them, in
 * order, off the JS thread.
 *
 * The writer works on its own duplicate of the descriptor: the caller may close its own at any
 * time (a reused descriptor number never receives these bytes), and the socket stays open until
 * the writer is closed and has written what it holds. From `new SocketWriter(fd)` on, write to
 * the socket only through it (an end, too: {@link SocketWriter.end}); reading is unaffected.
 */
import { addon, type WriterOwner } from './addon.ts';
import { errnoName } from './errno.ts';
import { errnoError, type NativeError, toNativeError } from './errors.ts';

const BUFFER = 0;
const LATIN1 = 1;
const UTF8 = 2;

/** Writes to one socket, made on the reactor thread. */
export class SocketWriter implements WriterOwner {
  #open = true;
  #onDrain: (() => void) | null = null;

  /** Duplicates `fd` (a connected, non-blocking stream socket) for writing. Throws a `NativeError` if it cannot. */
  constructor(fd: number) {
    try {
      addon.writerOpen(this, fd);
    } catch (e) {
      if (e instanceof TypeError) throw e;
      throw toNativeError(e, 'send', 'duplicating a socket descriptor to write to it');
    }
  }

  /**
   * Queues a copy of `data` (a string is encoded as latin1 or utf8) and returns the bytes queued
   * and not yet written, this included. After a write error (the peer reset) or `close()`,
   * data is dropped and 0 returned: the socket's reads say what happened.
   */
  send(data: Buffer | string, encoding: 'latin1' | 'utf8' = 'utf8'): number {
    if (!this.#open) return 0;
    if (typeof data !== 'string') return addon.writerSend(this, data, BUFFER);
    return addon.writerSend(this, data, encoding === 'latin1' ? LATIN1 : UTF8);
  }

  /**
   * As {@link send}, but when nothing is queued the bytes are written at once on this thread,
   * from `data` itself; only what the socket does not take is copied into the queue for the
   * reactor thread. Bytes stay in order. For small writes, where handing over to the reactor
   * thread costs more than the write. Returns the bytes queued, or -1 when the socket failed (a
   * write error, now or before: the bytes were dropped; {@link error} says why).
   */
  trySend(data: Buffer | string, encoding: 'latin1' | 'utf8' = 'utf8'): number {
    if (!this.#open) return 0;
    if (typeof data !== 'string') return addon.writerTrySend(this, data, BUFFER);
    return addon.writerTrySend(this, data, encoding === 'latin1' ? LATIN1 : UTF8);
  }

  /**
   * True if nothing is queued. Else false, and `cb` is called once the queue has been written
   * (or dropped after a write error). One callback at a time: a later call replaces it. Until
   * it comes (or `close()`), the writer is kept from collection and the process alive, as a
   * pending write keeps a socket: the callback comes even if nothing else refers to the writer.
   */
  drained(cb: () => void): boolean {
    if (!this.#open) return true;
    if (addon.writerDrained(this)) return true;
    this.#onDrain = cb;
    return false;
  }

  /** shutdown(SHUT_WR) once everything queued is written. */
  end(): void {
    if (this.#open) addon.writerEnd(this);
  }

  /** Bytes written to the socket so far (0 once closed). */
  get written(): number {
    return this.#open ? addon.writerWritten(this) : 0;
  }

  /**
   * The first write error (the peer reset, a broken pipe) as a `NativeError`, or null. After one,
   * everything queued was dropped and later sends are too: the socket is dead for writing.
   */
  get error(): NativeError | null {
    if (!this.#open) return null;
    const errno = addon.writerError(this);
    return errno === 0
      ? null
      : errnoError(errno, errnoName(errno), 'sendmsg', 'send', 'writing to the socket');
  }

  /** Lets go: the duplicate is closed once everything queued is written. No more callbacks. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#onDrain = null;
    addon.writerClose(this);
  }

  /** The addon's entry point (see {@link WriterOwner}); not for callers. */
  onWriterDrain(): void {
    const cb = this.#onDrain;
    this.#onDrain = null;
    cb?.();
  }
}
