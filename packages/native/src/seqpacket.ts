/**
 * SOCK_SEQPACKET Unix sockets: connection-oriented like a stream, but every send arrives as one
 * whole message (Node's `net` cannot carry them: `net.Socket` rejects the fd type). Reads and
 * writes are batched and driven by the event loop.
 *
 * A zero-length read means the peer closed, so empty messages are refused on send.
 */
import { EventEmitter } from 'node:events';
import { closeSync as closeFd, unlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { addon } from './addon.ts';
import { NativeError, toNativeError } from './errors.ts';
import { Poller, PollMode } from './poll.ts';

const SEQPACKET = 1;

/** Options for sockets. */
export interface SeqpacketOptions {
  /** Largest message accepted on read; larger ones raise EMSGSIZE. Default 256 KiB. */
  readonly maxMessageSize?: number;
  /** Most messages read per wakeup. Default 256. */
  readonly batch?: number;
}

/** Events of a `SeqpacketSocket`. */
export interface SeqpacketSocketEvents {
  /** Messages read in one wakeup, one Buffer per message, boundaries kept. */
  messages: [messages: Buffer[]];
  /** Queued messages have all been sent. */
  drain: [];
  /** The peer closed its end. The socket is closed after this. */
  end: [];
  error: [error: Error];
  close: [];
}

/** A connected SEQPACKET socket. Reading starts at once. */
export class SeqpacketSocket extends EventEmitter<SeqpacketSocketEvents> {
  readonly #poller: Poller;

  constructor(fd: number, opts: SeqpacketOptions = {}) {
    super();
    this.#poller = new Poller(
      fd,
      PollMode.read,
      {
        isSocket: true,
        maxSize: opts.maxMessageSize ?? 256 * 1024,
        batch: opts.batch ?? 256,
        op: 'receive',
        what: 'a SEQPACKET socket',
      },
      {
        data: (m) => this.emit('messages', m),
        drain: () => this.emit('drain'),
        end: () => {
          this.emit('end');
          this.close();
        },
        error: (e) => this.emit('error', e),
      },
    );
  }

  /** The socket's descriptor. */
  get fd(): number {
    return this.#poller.fd;
  }

  /** Messages waiting for the socket to drain. */
  get queued(): number {
    return this.#poller.queued;
  }

  /** Sends whole messages, in order. Returns false when some wait ('drain' follows). */
  send(messages: Buffer | Buffer[]): boolean {
    const list = Array.isArray(messages) ? messages : [messages];
    if (list.some((m) => m.length === 0)) throw new TypeError('SEQPACKET messages must not be empty');
    return this.#poller.write(list);
  }

  /** Pauses or resumes reading. */
  setReading(on: boolean): void {
    this.#poller.setReading(on);
  }

  /** Whether the socket keeps the process alive. Default true. */
  setRef(on: boolean): void {
    this.#poller.setRef(on);
  }

  /** Closes the socket; queued messages are dropped. Idempotent. */
  close(): void {
    if (this.#poller.closed) return;
    this.#poller.close();
    this.emit('close');
  }
}

/** Events of a `SeqpacketServer`. */
export interface SeqpacketServerEvents {
  connection: [socket: SeqpacketSocket];
  error: [error: Error];
  close: [];
}

/** A listening SEQPACKET socket. */
export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  /** The path listened on (`@name` for an abstract socket). */
  readonly path: string;
  readonly #poller: Poller;

  constructor(fd: number, path: string, opts: SeqpacketOptions) {
    super();
    this.path = path;
    this.#poller = new Poller(
      fd,
      PollMode.accept,
      { isSocket: true, maxSize: 1, batch: 64, op: 'listen', what: `accepting on ${path}` },
      {
        accepted: (fds) => {
          for (const c of fds) this.emit('connection', new SeqpacketSocket(c, opts));
        },
        error: (e) => this.emit('error', e),
      },
    );
  }

  /** Stops accepting, closes the socket and removes its file. Accepted sockets stay open. */
  close(): void {
    if (this.#poller.closed) return;
    this.#poller.close();
    if (!this.path.startsWith('@')) {
      try {
        unlinkSync(this.path);
      } catch {
        // Named boundary: the file may already be gone; closing must not fail for that.
      }
    }
    this.emit('close');
  }
}

/** Listens on `path` (a file path, or `@name` for Linux's abstract namespace). */
export function listen(path: string, opts: SeqpacketOptions & { backlog?: number } = {}): SeqpacketServer {
  let fd = -1;
  try {
    fd = addon.unixSocket(SEQPACKET);
    addon.unixBindListen(fd, path, opts.backlog ?? 511);
  } catch (e) {
    if (fd >= 0) closeFd(fd);
    throw toNativeError(e, 'listen', `listening on SEQPACKET socket ${path}`);
  }
  return new SeqpacketServer(fd, path, opts);
}

/** Connects to `path`, retrying while the listener's queue is full, for up to `timeoutMs`. */
export async function connect(
  path: string,
  opts: SeqpacketOptions & { timeoutMs?: number } = {},
): Promise<SeqpacketSocket> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    let fd = -1;
    let connected = false;
    try {
      fd = addon.unixSocket(SEQPACKET);
      connected = addon.unixConnect(fd, path);
    } catch (e) {
      if (fd >= 0) closeFd(fd);
      throw toNativeError(e, 'connect', `connecting to SEQPACKET socket ${path}`);
    }
    if (connected) return new SeqpacketSocket(fd, opts);
    closeFd(fd);
    if (Date.now() >= deadline) {
      throw new NativeError(
        'NATIVE_ERR_ETIMEDOUT',
        `connecting to SEQPACKET socket ${path} timed out: its queue stayed full`,
      );
    }
    await sleep(delay);
  }
}

/** A connected pair of SEQPACKET sockets (e.g. one end for a child process's stdio). */
export function pair(opts?: SeqpacketOptions): [SeqpacketSocket, SeqpacketSocket] {
  let fds: [number, number];
  try {
    fds = addon.socketPair(SEQPACKET, true, true);
  } catch (e) {
    throw toNativeError(e, 'socket', 'creating a SEQPACKET socket pair');
  }
  return [new SeqpacketSocket(fds[0], opts), new SeqpacketSocket(fds[1], opts)];
}

/** Wraps a connected SEQPACKET descriptor (inherited or received); takes ownership of `fd`. */
export function fromFd(fd: number, opts?: SeqpacketOptions): SeqpacketSocket {
  try {
    addon.setFdFlags(fd, true, true);
  } catch (e) {
    throw toNativeError(e, 'socket', `using descriptor ${fd} as a SEQPACKET socket`);
  }
  return new SeqpacketSocket(fd, opts);
}
