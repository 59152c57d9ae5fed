/**
 * SOCK_SEQPACKET Unix sockets: connection-oriented like a stream, but every send arrives as one
 * whole message (Node's `net` cannot carry them: `net.Socket` rejects the fd type). Reads and
 * writes are batched and driven by the event loop.
 *
 * A zero-length read means the peer closed, so empty messages are refused on send.
 */
import { EventEmitter } from 'node:events';
import { closeSync as closeFd, lstatSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
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

/** Options for a listening socket. */
export interface SeqpacketServerOptions extends SeqpacketOptions {
  /** Whether `close()` removes the socket's file. Default true for `listen`, false for `listenFd`. */
  readonly unlinkOnClose?: boolean;
}

/** A listening SEQPACKET socket. */
export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  /** The path listened on (`@name` for an abstract socket). */
  readonly path: string;
  readonly #poller: Poller;
  readonly #unlink: boolean;

  constructor(fd: number, path: string, opts: SeqpacketServerOptions) {
    super();
    this.path = path;
    this.#unlink = opts.unlinkOnClose ?? true;
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

  /** The listening descriptor (what a restart hands to the next process). */
  get fd(): number {
    return this.#poller.fd;
  }

  /**
   * Stops accepting, closes the socket and removes its file (unless `unlinkOnClose` is false:
   * another process may listen on the same socket now). Accepted sockets stay open.
   */
  close(): void {
    if (this.#poller.closed) return;
    this.#poller.close();
    if (this.#unlink && !this.path.startsWith('@')) {
      try {
        unlinkSync(this.path);
      } catch {
        // Named boundary: the file may already be gone; closing must not fail for that.
      }
    }
    this.emit('close');
  }
}

/** Options for `listen`. */
export interface SeqpacketListenOptions extends SeqpacketServerOptions {
  /** Accept queue length. Default 511. */
  readonly backlog?: number;
  /**
   * Bind under a temporary name and rename into place, replacing a stale socket file (one no
   * process accepts on); a live one is refused with EADDRINUSE, anything not a socket with
   * EEXIST. The file then appears atomically, and `unlinkOnClose` defaults to false (a restart's
   * next process may listen on it). Not for abstract (`@name`) sockets.
   */
  readonly replace?: boolean;
}

/** Listens on `path` (a file path, or `@name` for Linux's abstract namespace). */
export function listen(path: string, opts: SeqpacketListenOptions = {}): SeqpacketServer {
  const replace = opts.replace === true && !path.startsWith('@');
  const bindPath = replace ? join(dirname(path), `.${basename(path)}.${process.pid}.tmp`) : path;
  let fd = -1;
  try {
    if (replace) {
      refuseLiveOrForeign(path);
      rmSync(bindPath, { force: true });
    }
    fd = addon.unixSocket(SEQPACKET);
    addon.unixBindListen(fd, bindPath, opts.backlog ?? 511);
    if (replace) renameSync(bindPath, path);
  } catch (e) {
    if (fd >= 0) closeFd(fd);
    if (replace) rmSync(bindPath, { force: true });
    throw toNativeError(e, 'listen', `listening on SEQPACKET socket ${path}`);
  }
  return new SeqpacketServer(fd, path, { ...opts, unlinkOnClose: opts.unlinkOnClose ?? !replace });
}

/** Throws EEXIST for a file at `path` that is not a socket, EADDRINUSE for one someone accepts on. */
function refuseLiveOrForeign(path: string): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isSocket())
    throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  let fd = -1;
  try {
    fd = addon.unixSocket(SEQPACKET);
    addon.unixConnect(fd, path); // connected, or its queue is full: someone listens
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    // Refused: no one listens (a stale file). Of the wrong type: not ours to replace.
    if (/ECONNREFUSED/.test(code)) return;
    if (!/EPROTOTYPE/.test(code)) throw e;
  } finally {
    if (fd >= 0) closeFd(fd);
  }
  throw Object.assign(new Error(`another process listens on ${path}`), { code: 'EADDRINUSE' });
}

/**
 * Listens on an inherited listening SEQPACKET descriptor (a restart's handover, systemd's
 * `ListenSequentialPacket=`); takes ownership of `fd`. `path` only names it. Throws
 * `NATIVE_ERR_EPROTOTYPE` when `fd` is not a listening Unix SEQPACKET socket.
 */
export function listenFd(fd: number, path: string, opts: SeqpacketServerOptions = {}): SeqpacketServer {
  let kind: [number, number, number];
  try {
    kind = addon.socketKind(fd);
    addon.setFdFlags(fd, true, true);
  } catch (e) {
    throw toNativeError(e, 'listen', `listening on inherited SEQPACKET descriptor ${fd} (${path})`);
  }
  const [domain, type, listening] = kind;
  if (domain !== AF_UNIX || type !== SOCK_SEQPACKET || listening !== 1) {
    throw new NativeError(
      'NATIVE_ERR_EPROTOTYPE',
      `descriptor ${fd} (${path}) is not a listening Unix SEQPACKET socket (domain ${domain}, type ${type})`,
    );
  }
  return new SeqpacketServer(fd, path, { ...opts, unlinkOnClose: opts.unlinkOnClose ?? false });
}

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;

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
