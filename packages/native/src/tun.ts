/**
 * TUN devices: open one by name (`IFF_TUN | IFF_NO_PI`: each read or write is one bare IP
 * packet), then read batches of packets and write batches, driven by the event loop.
 *
 * A device opened in a namespace-owning child can be handed to another process with `passFd`
 * and wrapped there with `tun.fromFd` (never through Node's IPC: that aborts the receiver).
 */
import { EventEmitter } from 'node:events';
import { addon } from './addon.ts';
import { toNativeError } from './errors.ts';
import { Poller, PollMode } from './poll.ts';

/** Options for reading a device. */
export interface TunOptions {
  /** Most packets read per event-loop wakeup. Default 64. */
  readonly batch?: number;
  /** Largest packet accepted; match the device MTU. Default 65535. */
  readonly maxPacketSize?: number;
  /**
   * Read into one buffer reused by every batch (batch × maxPacketSize bytes): the packets a
   * 'packets' listener gets are views of it, valid only until the listeners (and the microtasks
   * they queued) have run; copy a packet to keep it. Saves a copy and a Buffer per packet, which
   * at large MTUs is most of what reading costs in JS (the garbage collector). Default false.
   */
  readonly reuseBuffers?: boolean;
}

/** Events of a `TunDevice`. */
export interface TunEvents {
  /** A batch of packets read in one wakeup, one Buffer per IP packet. */
  packets: [packets: Buffer[]];
  /** Writes that had to wait have all been written. */
  drain: [];
  error: [error: Error];
  close: [];
}

/** An open TUN device. Reading starts at once; packets read with no listener are dropped. */
export class TunDevice extends EventEmitter<TunEvents> {
  /** The interface name (`tun0`). */
  readonly name: string;
  readonly #poller: Poller;

  constructor(fd: number, name: string, opts: TunOptions = {}) {
    super();
    this.name = name;
    this.#poller = new Poller(
      fd,
      PollMode.read,
      {
        isSocket: false,
        maxSize: opts.maxPacketSize ?? 65535,
        batch: opts.batch ?? 64,
        reuse: opts.reuseBuffers ?? false,
        op: 'tun',
        what: `reading TUN device ${name}`,
      },
      {
        data: (packets) => this.emit('packets', packets),
        drain: () => this.emit('drain'),
        error: (e) => this.emit('error', e),
        end: () => this.close(),
      },
    );
  }

  /** The device's descriptor (for passing it to another process). */
  get fd(): number {
    return this.#poller.fd;
  }

  /** Writes whole IP packets in one batch. Returns false when some wait for writability. */
  write(packets: Buffer | Buffer[]): boolean {
    return this.#poller.write(Array.isArray(packets) ? packets : [packets]);
  }

  /** Pauses or resumes reading. */
  setReading(on: boolean): void {
    this.#poller.setReading(on);
  }

  /** Whether the device keeps the process alive. Default true. */
  setRef(on: boolean): void {
    this.#poller.setRef(on);
  }

  /** Stops reading and closes the descriptor; the kernel removes a non-persistent device. */
  close(): void {
    if (this.#poller.closed) return;
    this.#poller.close();
    this.emit('close');
  }
}

/**
 * Opens (creating if needed) TUN device `name`; `"tun%d"` lets the kernel pick a free name.
 * Needs CAP_NET_ADMIN in the network namespace's owning user namespace.
 */
export function open(name: string, opts?: TunOptions): TunDevice {
  let fd: number;
  let actual: string;
  try {
    [fd, actual] = addon.tunOpen(name);
  } catch (e) {
    throw toNativeError(e, 'tun', `opening /dev/net/tun as device ${name}`);
  }
  return new TunDevice(fd, actual, opts);
}

/** Wraps a TUN descriptor received from another process; takes ownership of `fd`. */
export function fromFd(fd: number, name: string, opts?: TunOptions): TunDevice {
  try {
    addon.setFdFlags(fd, true, true);
  } catch (e) {
    throw toNativeError(e, 'tun', `using descriptor ${fd} as TUN device ${name}`);
  }
  return new TunDevice(fd, name, opts);
}
