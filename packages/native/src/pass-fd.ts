/**
 * Descriptor passing over Unix sockets (SCM_RIGHTS) and socket pairs.
 *
 * This is how a TUN device or a socket opened in another namespace reaches the main process:
 * make a pair, give one end to the child as a stdio descriptor (spawn's `stdio: [..., fd]`),
 * and send descriptors over it. Never send non-socket descriptors through Node's own IPC
 * channel: the receiving process aborts (`LibuvStreamWrap::OnUvRead` assertion).
 */
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { addon } from './addon.ts';
import { NativeError, toNativeError } from './errors.ts';
import { Poller, PollMode } from './poll.ts';

/** Socket types a pair can have. */
export type SocketPairType = 'stream' | 'seqpacket' | 'dgram';

const TYPES: Record<SocketPairType, number> = { stream: 0, seqpacket: 1, dgram: 2 };

/**
 * A connected pair of Unix sockets, non-blocking and close-on-exec by default (spawn's stdio
 * clears close-on-exec on the child's copy, so the default suits handing one end to a child).
 */
export function socketPair(
  type: SocketPairType = 'stream',
  opts: { nonBlocking?: boolean; cloexec?: boolean } = {},
): [number, number] {
  try {
    return addon.socketPair(TYPES[type], opts.nonBlocking ?? true, opts.cloexec ?? true);
  } catch (e) {
    throw toNativeError(e, 'socket', `creating a ${type} socket pair`);
  }
}

/** One message received with `receive`: its bytes and the descriptors that came with it. */
export interface FdMessage {
  readonly data: Buffer;
  /** Received descriptors, close-on-exec, owned by the receiver. */
  readonly fds: number[];
}

/**
 * Sends `fds` (at most 64) with `data` (at least one byte) over Unix socket `sockFd`. The kernel
 * duplicates the descriptors, so the sender may close its copies once this returns.
 */
export function send(sockFd: number, fds: number[], data: Buffer = Buffer.from('F')): void {
  let n: number;
  try {
    n = addon.sendFds(sockFd, data, fds);
  } catch (e) {
    throw toNativeError(e, 'fd-passing', `sending ${fds.length} descriptor(s) over descriptor ${sockFd}`);
  }
  if (n < 0) {
    throw new NativeError(
      'NATIVE_ERR_EAGAIN',
      `sending descriptors over descriptor ${sockFd} was refused (EAGAIN): the peer is not reading`,
    );
  }
}

/** Receives one message without blocking; null when none is waiting. Empty `data`: peer closed. */
export function receive(sockFd: number, maxBytes = 65536): FdMessage | null {
  try {
    return addon.recvFds(sockFd, maxBytes);
  } catch (e) {
    throw toNativeError(e, 'fd-passing', `receiving descriptors over descriptor ${sockFd}`);
  }
}

/** Events of an `FdChannel`. */
export interface FdChannelEvents {
  message: [message: FdMessage];
  end: [];
  error: [error: Error];
  close: [];
}

/** A Unix socket that sends and receives descriptors, with receiving driven by the event loop. */
export class FdChannel extends EventEmitter<FdChannelEvents> {
  readonly #poller: Poller;

  /** Takes ownership of `sockFd` (made non-blocking and close-on-exec). */
  constructor(sockFd: number) {
    super();
    try {
      addon.setFdFlags(sockFd, true, true);
    } catch (e) {
      throw toNativeError(e, 'fd-passing', `using descriptor ${sockFd} as a descriptor channel`);
    }
    this.#poller = new Poller(
      sockFd,
      PollMode.notify,
      { isSocket: true, maxSize: 1, batch: 1, op: 'fd-passing', what: 'receiving descriptors' },
      {
        readable: () => this.#drain(),
        error: (e) => this.emit('error', e),
      },
    );
  }

  /** The channel's socket descriptor. */
  get fd(): number {
    return this.#poller.fd;
  }

  /** Sends descriptors with a message (see `send`). */
  send(fds: number[], data?: Buffer): void {
    send(this.#poller.fd, fds, data);
  }

  /** Whether the channel keeps the process alive. Default true. */
  setRef(on: boolean): void {
    this.#poller.setRef(on);
  }

  /** Closes the socket. Descriptors already received stay open (the receiver owns them). */
  close(): void {
    if (this.#poller.closed) return;
    this.#poller.close();
    this.emit('close');
  }

  #drain(): void {
    for (let i = 0; i < 64 && !this.#poller.closed; i++) {
      let m: FdMessage | null;
      try {
        m = receive(this.#poller.fd);
      } catch (e) {
        this.emit('error', e as Error);
        return;
      }
      if (m === null) return;
      if (m.data.length === 0 && m.fds.length === 0) {
        this.emit('end');
        this.close();
        return;
      }
      if (this.listenerCount('message') === 0) for (const fd of m.fds) closeSync(fd);
      else this.emit('message', m);
    }
  }
}
