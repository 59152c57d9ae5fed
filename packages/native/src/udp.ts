/**
 * `UdpSocket`: a UDP socket in the addon (src/udp.c), read with recvmmsg and written with
 * sendmmsg, for what Node's `dgram` cannot do: adopt a descriptor (a listening socket handed
 * over on a graceful restart, or from systemd) and move many datagrams per JS call.
 *
 * Ordering rules:
 * - Reading starts when `onBatch` is set; datagrams that arrive before wait in the kernel.
 * - A batch is valid only during its callback (see udp-batch.ts): copy what you keep.
 * - Sends are written at once or queued in order behind earlier ones while the socket is
 *   full; beyond `maxQueue` queued datagrams, new ones are dropped and counted, as UDP does.
 * - Errors of a datagram (an ICMP port unreachable seen on a connected socket, a send refused)
 *   go to `onError` and the socket keeps working; an error that stops reading also closes it.
 *   Send errors reach `onError` in a microtask, never inside the `send` call.
 * - Datagrams longer than `maxDatagramSize` are dropped, never delivered cut: counted in
 *   `stats().truncated`, and reported to `onTruncated` (once per recvmmsg call that had some,
 *   before that call's batch; nothing is called when there are none).
 * - `close()` may be called at any time, a batch callback included: nothing is delivered after.
 */
import { closeSync } from 'node:fs';
import { addon, type UdpHandle } from './addon.ts';
import { errnoName } from './errno.ts';
import { errnoError, type NativeError, toNativeError } from './errors.ts';
import { MAX_BATCH, MAX_DATAGRAM, META_INTS, sharedScratch, UdpBatch } from './udp-batch.ts';

export { formatIpv4, formatIpv6, UdpBatch } from './udp-batch.ts';

/** Options shared by every way of making a socket. */
export interface UdpSocketOptions {
  /** SO_REUSEADDR. Default false. */
  readonly reuseAddr?: boolean;
  /** SO_REUSEPORT: several sockets (or processes) share the port, flows spread by 4-tuple hash. Default false. */
  readonly reusePort?: boolean;
  /** IPV6_V6ONLY for an IPv6 socket; default: the system's (usually dual-stack). */
  readonly ipv6Only?: boolean;
  /** SO_RCVBUF in bytes (the kernel doubles it and caps it at net.core.rmem_max). Default: the system's. */
  readonly receiveBufferSize?: number;
  /** SO_SNDBUF in bytes. Default: the system's. */
  readonly sendBufferSize?: number;
  /** Most datagrams per recvmmsg call, 1-64. Default 64. */
  readonly batch?: number;
  /** recvmmsg calls per readiness wake-up, so one busy socket cannot starve the loop. Default 4. */
  readonly rounds?: number;
  /** Largest datagram read whole, 1-65535; longer ones are dropped and counted as truncated. Default 65535. */
  readonly maxDatagramSize?: number;
  /** Datagrams queued while the socket is full, beyond which sends are dropped. Default 1024. */
  readonly maxQueue?: number;
}

/** Where to bind a listening socket. */
export interface UdpBindOptions extends UdpSocketOptions {
  /** A local IPv4 or IPv6 address (`0.0.0.0`, `::`, `127.0.0.1`); its form picks the family. */
  readonly address: string;
  /** Default 0: an ephemeral port. */
  readonly port?: number;
}

/** The peer of a connected socket (a per-session upstream). */
export interface UdpConnectOptions extends UdpSocketOptions {
  readonly address: string;
  readonly port: number;
  /** Bind to this local address first (a source address). Default: the kernel's choice. */
  readonly localAddress?: string;
  readonly localPort?: number;
}

/** An address and port, as `address()` reports them. */
export interface UdpAddressInfo {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** One datagram to send with `sendBatch`; the address is required on an unconnected socket. */
export interface UdpOutgoing {
  readonly data: Uint8Array;
  readonly address?: string;
  readonly port?: number;
}

/** A destination parsed once (`UdpSocket.target`), for sending many batches to one peer. */
export type UdpTarget = Int32Array & { readonly __udpTarget: unique symbol };

/** What became of one datagram given to `send`. */
export type UdpSendResult = 'sent' | 'queued' | 'dropped' | 'failed';

/** A socket's counters since it was made. */
export interface UdpStats {
  readonly received: number;
  readonly receivedBytes: number;
  /** Datagrams longer than `maxDatagramSize`, dropped. */
  readonly truncated: number;
  readonly sent: number;
  readonly sentBytes: number;
  /** Datagrams waiting in the queue now. */
  readonly queued: number;
  /** Sends dropped because the queue was full. */
  readonly dropped: number;
  readonly sendErrors: number;
  readonly receiveErrors: number;
  /** Receive callbacks made (datagrams / batches = the mean batch). */
  readonly batches: number;
}

/** The order of the counters the addon's udpStats returns (src/udp.c). */
const STAT_KEYS = [
  'received',
  'receivedBytes',
  'truncated',
  'sent',
  'sentBytes',
  'queued',
  'dropped',
  'sendErrors',
  'receiveErrors',
  'batches',
] as const satisfies readonly (keyof UdpStats)[];

const CB = { batch: 0, error: 1, fatal: 2, socketError: 3, truncated: 4 } as const;
const OP = { close: 0, reading: 1, ref: 2 } as const;
const SEND: readonly UdpSendResult[] = ['sent', 'queued', 'dropped'];

function familyOf(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

function intOption(v: number | undefined, dflt: number, min: number, max: number, name: string): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < min || n > max)
    throw new TypeError(`${name} must be an integer from ${min} to ${max}`);
  return n;
}

/** A UDP socket on the event loop. Make one with `UdpSocket.bind`, `UdpSocket.connect` or `UdpSocket.adopt`. */
export class UdpSocket {
  /** The socket's family (an IPv6 socket may be dual-stack). */
  readonly family: 4 | 6;
  /** True for a socket with a fixed peer: received batches carry no addresses, sends need none. */
  readonly connected: boolean;
  readonly #fd: number;
  readonly #batch: UdpBatch;
  readonly #what: string;
  #handle: UdpHandle | null;
  #onBatch: ((batch: UdpBatch) => void) | null = null;
  #onError: ((error: NativeError) => void) | null = null;
  #onTruncated: ((count: number) => void) | null = null;

  /** Binds a new socket (the family follows the address). */
  static bind(opts: UdpBindOptions): UdpSocket {
    const fd = UdpSocket.#open(familyOf(opts.address), opts);
    try {
      addon.udpBind(fd, opts.address, opts.port ?? 0);
    } catch (e) {
      closeSync(fd);
      throw toNativeError(e, 'udp', `binding a UDP socket to ${opts.address}:${opts.port ?? 0}`);
    }
    return new UdpSocket(fd, familyOf(opts.address), opts);
  }

  /** A new socket connected to one peer (the kernel then drops datagrams from anyone else). */
  static connect(opts: UdpConnectOptions): UdpSocket {
    const family = familyOf(opts.address);
    const fd = UdpSocket.#open(family, opts);
    try {
      if (opts.localAddress !== undefined) addon.udpBind(fd, opts.localAddress, opts.localPort ?? 0);
      addon.udpConnect(fd, opts.address, opts.port);
    } catch (e) {
      closeSync(fd);
      throw toNativeError(e, 'udp', `connecting a UDP socket to ${opts.address}:${opts.port}`);
    }
    return new UdpSocket(fd, family, opts);
  }

  /**
   * Takes over a UDP socket descriptor received from another process (SCM_RIGHTS, systemd's
   * LISTEN_FDS); it is made non-blocking and close-on-exec. Socket options in `opts` are not
   * applied (the socket is bound already); the reading options are.
   */
  static adopt(fd: number, opts: UdpSocketOptions = {}): UdpSocket {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError('fd must be a descriptor number');
    let family: number;
    try {
      family = addon.udpAdopt(fd);
    } catch (e) {
      throw toNativeError(e, 'udp', `adopting descriptor ${fd} as a UDP socket`);
    }
    return new UdpSocket(fd, family as 4 | 6, opts);
  }

  /** Parses a destination once, for `sendBatch(batch, target)`. */
  static target(address: string, port: number): UdpTarget {
    return addon.udpPackAddress(address, port) as UdpTarget;
  }

  static #open(family: 4 | 6, opts: UdpSocketOptions): number {
    const rcv = intOption(opts.receiveBufferSize, 0, 0, 2 ** 31 - 1, 'receiveBufferSize');
    const snd = intOption(opts.sendBufferSize, 0, 0, 2 ** 31 - 1, 'sendBufferSize');
    const v6Only = opts.ipv6Only === undefined ? -1 : opts.ipv6Only ? 1 : 0;
    try {
      return addon.udpSocket(family, opts.reuseAddr ?? false, opts.reusePort ?? false, v6Only, rcv, snd);
    } catch (e) {
      throw toNativeError(e, 'udp', `creating an IPv${family} UDP socket`);
    }
  }

  /** Use the static factories; this takes ownership of `fd` (closed on failure). */
  constructor(fd: number, family: 4 | 6, opts: UdpSocketOptions) {
    this.#fd = fd;
    this.family = family;
    this.#what = `UDP socket ${fd}`;
    const { scratch, bytes, meta } = sharedScratch();
    this.#batch = new UdpBatch(bytes, meta);
    let batch: number;
    let rounds: number;
    let maxSize: number;
    let maxQueue: number;
    try {
      batch = intOption(opts.batch, MAX_BATCH, 1, MAX_BATCH, 'batch');
      rounds = intOption(opts.rounds, 4, 1, 1024, 'rounds');
      maxSize = intOption(opts.maxDatagramSize, MAX_DATAGRAM, 1, MAX_DATAGRAM, 'maxDatagramSize');
      maxQueue = intOption(opts.maxQueue, 1024, 0, 2 ** 31 - 1, 'maxQueue');
      this.#handle = addon.udpStart(fd, scratch, meta, batch, maxSize, rounds, maxQueue, (k, v) =>
        this.#event(k, v),
      );
    } catch (e) {
      closeSync(fd);
      throw toNativeError(e, 'udp', `watching ${this.#what}`);
    }
    this.connected = addon.udpAddress(fd, true) !== null;
  }

  /** The descriptor, to pass to another process (SCM_RIGHTS duplicates it); -1 once closed. */
  get fd(): number {
    return this.#handle === null ? -1 : this.#fd;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#handle === null;
  }

  /** The local address and port (getsockname). */
  address(): UdpAddressInfo {
    return this.#name(false) as UdpAddressInfo;
  }

  /** The peer of a connected socket (getpeername), else null. */
  remoteAddress(): UdpAddressInfo | null {
    return this.#name(true);
  }

  /**
   * Sets the receiver of every batch and starts reading. Called once per recvmmsg call with
   * the datagrams it read (at least one); the batch is valid only during the call.
   */
  onBatch(fn: (batch: UdpBatch) => void): this {
    this.#onBatch = fn;
    this.setReading(true);
    return this;
  }

  /** Sets the receiver of errors (see the module comment); without one, they are only counted. */
  onError(fn: (error: NativeError) => void): this {
    this.#onError = fn;
    return this;
  }

  /**
   * Sets the receiver of truncations: `count` datagrams longer than `maxDatagramSize` were read
   * and dropped (see the module comment). Without one, they are only counted in `stats()`.
   */
  onTruncated(fn: (count: number) => void): this {
    this.#onTruncated = fn;
    return this;
  }

  /**
   * Sends one datagram (to `address`:`port`, or to the peer of a connected socket): written
   * now, queued behind others or a full socket, dropped when the queue is full, or failed (the
   * error goes to `onError`). Throws a TypeError for an address or port that cannot be used.
   */
  send(data: Uint8Array, port?: number, address?: string): UdpSendResult {
    const h = this.#live();
    return this.#result(addon.udpSend(h, data, 0, data.length, address ?? null, port ?? 0, null));
  }

  /**
   * Sends datagram `i` of a received batch (to `to`, or to the peer of a connected socket)
   * without making a view of it: how a relay forwards one datagram to its session's upstream.
   * `skip` leaves out the payload's first bytes (a PROXY protocol or SPP header just parsed);
   * `header` is sent before it (one header added, no copy). Results as `send`.
   */
  sendFrom(
    batch: UdpBatch,
    i: number,
    to?: UdpTarget | null,
    opts: { readonly skip?: number; readonly header?: Uint8Array } = {},
  ): UdpSendResult {
    const h = this.#live();
    if (!Number.isInteger(i) || i < 0 || i >= batch.count) {
      throw new TypeError(`no datagram ${i} in a batch of ${batch.count}`);
    }
    const skip = opts.skip ?? 0;
    const length = batch.length(i);
    if (!Number.isInteger(skip) || skip < 0 || skip > length) {
      throw new TypeError(`skip must be from 0 to the datagram's ${length} bytes`);
    }
    const offset = batch.offset(i) + skip;
    return this.#result(
      addon.udpSend(h, batch.data, offset, length - skip, to ?? null, 0, opts.header ?? null),
    );
  }

  /**
   * Sends many datagrams with sendmmsg: a received batch (each back to its sender, or all to
   * `to`; nothing is copied), or a list (each to its own address, or all to `to`). A `header`
   * goes before every payload (e.g. an SPP header on every reply of a session; no copy).
   * Returns how many were sent or queued; failures go to `onError` (the first of them) and are
   * counted.
   */
  sendBatch(items: UdpBatch | readonly UdpOutgoing[], to?: UdpTarget | null, header?: Uint8Array): number {
    const h = this.#live();
    let r: number | [number, number];
    if (items instanceof UdpBatch) {
      r = addon.udpSendMany(h, items.data, items.meta, 0, items.count, to ?? null, header ?? null, 0);
    } else {
      if (items.length === 0) return 0;
      const meta = new Int32Array(items.length * META_INTS);
      let size = 0;
      for (const it of items) size += it.data.length;
      const data = Buffer.allocUnsafe(size);
      let at = 0;
      for (let i = 0; i < items.length; i++) {
        const it = items[i] as UdpOutgoing;
        data.set(it.data, at);
        meta[i * META_INTS] = at;
        meta[i * META_INTS + 1] = it.data.length;
        at += it.data.length;
        if (it.address !== undefined && (to === undefined || to === null)) {
          meta.set(addon.udpPackAddress(it.address, it.port ?? 0), i * META_INTS + 2);
        }
      }
      r = addon.udpSendMany(h, data, meta, 0, items.length, to ?? null, header ?? null, 0);
    }
    return this.#many(r);
  }

  /**
   * Sends datagrams `start` to `end - 1` of a received batch, as `sendBatch` does, each without
   * its first `skip` bytes (a header just parsed): a relay's run of datagrams from one client
   * goes up in one system call. Returns how many were sent or queued.
   */
  sendRange(batch: UdpBatch, start: number, end: number, to?: UdpTarget | null, skip = 0): number {
    const h = this.#live();
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > batch.count || start > end) {
      throw new TypeError(`no datagrams ${start} to ${end} in a batch of ${batch.count}`);
    }
    return this.#many(
      addon.udpSendMany(h, batch.data, batch.meta, start, end - start, to ?? null, null, skip),
    );
  }

  #many(r: number | [number, number]): number {
    if (typeof r === 'number') return r;
    this.#later(r[1], 'sendmmsg');
    return r[0];
  }

  /** Pauses or resumes reading (back-pressure: the kernel buffer then fills and drops). */
  setReading(on: boolean): void {
    if (this.#handle !== null) addon.udpControl(this.#handle, OP.reading, on);
  }

  /** Whether this socket keeps the event loop alive. Default true. */
  setRef(on: boolean): void {
    if (this.#handle !== null) addon.udpControl(this.#handle, OP.ref, on);
  }

  /** The counters (see `UdpStats`). */
  stats(): UdpStats {
    if (this.#handle === null)
      throw errnoError(9, 'EBADF', 'udp', 'udp', `reading the counters of ${this.#what}`);
    const values = addon.udpStats(this.#handle) as number[];
    return Object.fromEntries(STAT_KEYS.map((k, n) => [k, values[n] as number])) as unknown as UdpStats;
  }

  /** Stops reading and closes the descriptor; queued datagrams are dropped. Idempotent. */
  close(): void {
    if (this.#handle === null) return;
    const h = this.#handle;
    this.#handle = null;
    this.#onBatch = null;
    this.#onTruncated = null;
    addon.udpControl(h, OP.close, false);
  }

  #result(r: number): UdpSendResult {
    if (r >= 0) return SEND[r] as UdpSendResult;
    this.#later(-r, 'sendmsg');
    return 'failed';
  }

  #live(): UdpHandle {
    if (this.#handle === null) throw errnoError(9, 'EBADF', 'send', 'udp', `sending on closed ${this.#what}`);
    return this.#handle;
  }

  #name(peer: boolean): UdpAddressInfo | null {
    if (this.#handle === null)
      throw errnoError(9, 'EBADF', 'getsockname', 'udp', `reading closed ${this.#what}`);
    let r: [string, number] | null;
    try {
      r = addon.udpAddress(this.#fd, peer);
    } catch (e) {
      throw toNativeError(e, 'udp', `reading the address of ${this.#what}`);
    }
    return r === null ? null : { address: r[0], port: r[1], family: familyOf(r[0]) };
  }

  #event(kind: number, value: number): void {
    if (kind === CB.batch) {
      this.#batch.count = value;
      this.#onBatch?.(this.#batch);
      return;
    }
    if (kind === CB.truncated) {
      this.#onTruncated?.(value);
      return;
    }
    const syscall = kind === CB.socketError ? 'getsockopt(SO_ERROR)' : 'recvmmsg';
    const e = errnoError(value, errnoName(value), syscall, 'udp', `receiving on ${this.#what}`);
    if (kind === CB.fatal) this.close();
    this.#onError?.(e);
  }

  /** Reports a send error in a microtask (never inside the caller's `send`). */
  #later(errno: number, syscall: string): void {
    const e = errnoError(errno, errnoName(errno), syscall, 'udp', `sending on ${this.#what}`);
    queueMicrotask(() => this.#onError?.(e));
  }
}
