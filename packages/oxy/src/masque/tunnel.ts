/**
 * One open MASQUE tunnel on the client side: a byte stream (an HTTP/2 stream after extended
 * CONNECT, or the socket after an HTTP/1.1 `101`) carrying capsules both ways.
 *
 * Ordering and flow rules:
 * - Capsules are decoded in stream order; `datagram` events fire in the order received.
 * - Received datagrams go to `datagram` listeners at once; the async iterator keeps its own
 *   queue and pauses the stream when the queue reaches `highWaterMark`, so a slow consumer
 *   pushes back on the proxy through HTTP/2 flow control or TCP, and nothing is dropped.
 *   With neither a listener nor an iterator, datagrams are dropped, as UDP would.
 * - `send` returns `false` when the stream's write buffer is full; `await drain()` then.
 * - A malformed capsule aborts the stream (RFC 9297 §3.3) and emits `error` once; `close`
 *   fires exactly once on every path (closed by us, by the proxy, by an error).
 */

import { EventEmitter, once } from 'node:events';
import type { Duplex } from 'node:stream';
import { isOxyError, OXY_ERR, OxyError } from '../errors.ts';
import {
  CAPSULE_TYPE,
  type Capsule,
  CapsuleDecoder,
  DEFAULT_MAX_CAPSULE_SIZE,
  decodeDatagramCapsule,
  encodeDatagramCapsule,
} from '../protocols/capsule/codec.ts';
import {
  decodeAddressAssign,
  decodeAddressRequest,
  decodeRouteAdvertisement,
  encodeAddressAssign,
  encodeAddressRequest,
  encodeRouteAdvertisement,
  type IpAddressRange,
  type IpPrefixEntry,
} from '../protocols/capsule/connect-ip.ts';
import type { MasqueProtocol } from '../protocols/masque/template.ts';

/** The largest UDP payload a datagram may carry (RFC 9298 §5). */
export const MAX_UDP_PAYLOAD = 65_527;

/** What a tunnel is built from; the client fills it in after the proxy said yes. */
export interface TunnelInit {
  readonly protocol: MasqueProtocol;
  readonly stream: Duplex;
  /** Bytes already read past the response head (HTTP/1.1 `upgrade` gives them). */
  readonly head?: Uint8Array | undefined;
  /** The proxy's status: 101 (HTTP/1.1) or 2xx (HTTP/2). */
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly maxCapsuleSize?: number | undefined;
  readonly highWaterMark?: number | undefined;
  /** How to abort the stream on a protocol error (HTTP/2: RST_STREAM; HTTP/1.1: destroy). */
  readonly abort: (err: OxyError) => void;
}

/** Events of every tunnel. */
export type MasqueTunnelEvents = {
  /** A datagram arrived. `contextId` is 0 for UDP payloads and IP packets. */
  datagram: [payload: Uint8Array, contextId: number];
  /** The tunnel failed; `close` follows. */
  error: [err: OxyError];
  /** The tunnel is closed, whoever closed it. Fires once. */
  close: [];
};

/** The part shared by UDP and IP tunnels. */
export class MasqueTunnel<
  E extends MasqueTunnelEvents & Record<keyof E, unknown[]> = MasqueTunnelEvents,
> extends EventEmitter<E> {
  readonly protocol: MasqueProtocol;
  /** The proxy's status: 101 for HTTP/1.1, 2xx for HTTP/2. */
  readonly status: number;
  /** The proxy's response headers. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly #stream: Duplex;
  readonly #decoder: CapsuleDecoder;
  readonly #abort: (err: OxyError) => void;
  readonly #highWaterMark: number;
  #closed = false;
  #error: OxyError | undefined;
  readonly #closedPromise: Promise<void>;

  constructor(init: TunnelInit, types: readonly number[]) {
    super();
    this.protocol = init.protocol;
    this.status = init.status;
    this.headers = init.headers;
    this.#stream = init.stream;
    this.#abort = init.abort;
    this.#highWaterMark = init.highWaterMark ?? 256;
    this.#decoder = new CapsuleDecoder({
      maxCapsuleSize: init.maxCapsuleSize ?? DEFAULT_MAX_CAPSULE_SIZE,
      types,
    });
    this.#closedPromise = new Promise((resolve) => this.#untyped.once('close', resolve));
    const s = this.#stream;
    s.on('end', () => {
      if (this.#closed) return;
      try {
        this.#decoder.end();
      } catch (e) {
        this.fail(e as OxyError);
        return;
      }
      // The proxy finished its side; finish ours so the stream closes.
      s.end();
    });
    s.on('error', (e: Error) => {
      this.#record(toTunnelError(e));
      s.destroy();
    });
    s.on('close', () => this.#finish());
    // Reading starts on the next turn, once the caller awaiting the tunnel has attached its
    // listeners; until then the stream buffers (capsules sent with the answer are not lost).
    setImmediate(() => {
      if (init.head !== undefined && init.head.length > 0) this.#onData(init.head);
      s.on('data', (chunk: Uint8Array) => this.#onData(chunk));
    });
  }

  /** This emitter without the event map: the base class emits for any `E` it is given. */
  get #untyped(): EventEmitter {
    return this as EventEmitter;
  }

  /** The error that ended the tunnel, if one did. */
  get error(): OxyError | undefined {
    return this.#error;
  }

  /** Settles (never rejects) when the tunnel has closed. */
  get whenClosed(): Promise<void> {
    return this.#closedPromise;
  }

  /** True once the tunnel has closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends `payload` in a DATAGRAM capsule with `contextId` (default 0). Returns `false` when the
   * stream's buffer is full: the datagram is queued, and the caller should `await drain()`.
   * Throws `OXY_ERR_CAPSULE_TOO_LARGE` for a UDP payload above 65,527 bytes.
   */
  send(payload: Uint8Array, contextId = 0): boolean {
    if (this.#closed) throw new OxyError(OXY_ERR.CLIENT_CLOSED, 'the MASQUE tunnel is closed');
    if (this.protocol === 'connect-udp' && contextId === 0 && payload.length > MAX_UDP_PAYLOAD) {
      throw new OxyError(
        OXY_ERR.CAPSULE_TOO_LARGE,
        `UDP payload of ${payload.length} bytes exceeds ${MAX_UDP_PAYLOAD}`,
      );
    }
    return this.#stream.write(encodeDatagramCapsule(payload, contextId));
  }

  /** Writes an already framed capsule (CONNECT-IP control capsules). */
  protected writeCapsule(capsule: Uint8Array): boolean {
    if (this.#closed) throw new OxyError(OXY_ERR.CLIENT_CLOSED, 'the MASQUE tunnel is closed');
    return this.#stream.write(capsule);
  }

  /** Resolves when the write buffer has room again (at once if it has), or the tunnel closed. */
  async drain(): Promise<void> {
    if (this.#closed || !this.#stream.writableNeedDrain) return;
    await Promise.race([once(this.#stream, 'drain'), this.#closedPromise]);
  }

  /**
   * Closes the tunnel: ends our side of the stream and waits for the proxy to end its side,
   * at most `timeoutMs` (default 5 s), after which the stream is destroyed.
   */
  async close(timeoutMs = 5_000): Promise<void> {
    if (this.#closed) return;
    this.#stream.end();
    const timer = setTimeout(() => this.#stream.destroy(), timeoutMs);
    try {
      await this.#closedPromise;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Received context-0 payloads, in order, until the tunnel closes (then the loop ends) or
   * fails (then the loop throws). Backpressure: see the module comment.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    const queue: Uint8Array[] = [];
    let wake: (() => void) | undefined;
    let paused = false;
    const onDatagram = (payload: Uint8Array, contextId: number) => {
      if (contextId !== 0) return;
      queue.push(payload);
      if (queue.length >= this.#highWaterMark && !paused) {
        paused = true;
        this.#stream.pause();
      }
      wake?.();
    };
    const onEnd = () => wake?.();
    this.#untyped.on('datagram', onDatagram);
    this.#untyped.on('close', onEnd);
    try {
      for (;;) {
        const next = queue.shift();
        if (next !== undefined) {
          if (paused && queue.length < this.#highWaterMark / 2) {
            paused = false;
            this.#stream.resume();
          }
          yield next;
          continue;
        }
        if (this.#closed) {
          if (this.#error !== undefined) throw this.#error;
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      this.#untyped.off('datagram', onDatagram);
      this.#untyped.off('close', onEnd);
      if (paused) this.#stream.resume();
    }
  }

  /** Handles one decoded capsule other than DATAGRAM (CONNECT-IP overrides this). */
  protected handleCapsule(_capsule: Capsule): void {}

  #onData(chunk: Uint8Array): void {
    if (this.#closed || this.#error !== undefined) return;
    try {
      for (const c of this.#decoder.push(chunk)) {
        if (c.type === CAPSULE_TYPE.DATAGRAM) {
          const d = decodeDatagramCapsule(c.value);
          if (this.protocol === 'connect-udp' && d.contextId === 0 && d.payload.length > MAX_UDP_PAYLOAD) {
            throw new OxyError(
              OXY_ERR.CAPSULE_MALFORMED,
              `UDP payload of ${d.payload.length} bytes exceeds ${MAX_UDP_PAYLOAD}`,
            );
          }
          this.#untyped.emit('datagram', d.payload, d.contextId);
        } else {
          this.handleCapsule(c);
        }
        if (this.#closed || this.#error !== undefined) return;
      }
    } catch (e) {
      // Our codec's errors fail the tunnel; anything else came from a listener and stays the
      // listener's (thrown on, as EventEmitter does).
      if (!isOxyError(e) || (e.code !== OXY_ERR.CAPSULE_MALFORMED && e.code !== OXY_ERR.CAPSULE_TOO_LARGE))
        throw e;
      this.fail(e);
    }
  }

  /** Records the first error, emits it, and aborts the stream; `close` follows. */
  protected fail(err: OxyError): void {
    if (!this.#record(err)) return;
    this.#abort(err);
  }

  /** Keeps the first error and emits it; false when the tunnel had already failed or closed. */
  #record(err: OxyError): boolean {
    if (this.#closed || this.#error !== undefined) return false;
    this.#error = err;
    // `error` without a listener would throw from inside a stream callback; the error is
    // kept on `tunnel.error` and thrown by the iterator instead.
    if (this.#untyped.listenerCount('error') > 0) this.#untyped.emit('error', err);
    return true;
  }

  #finish(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#untyped.emit('close');
  }
}

function toTunnelError(e: unknown): OxyError {
  if (isOxyError(e)) return e;
  const cause = e instanceof Error ? e : new Error(String(e));
  return new OxyError(OXY_ERR.UPSTREAM_FAILED, `MASQUE tunnel failed: ${cause.message}`, {
    source: 'upstream',
    cause,
  });
}

/** A CONNECT-UDP tunnel: `send` UDP payloads to the target, iterate or listen for replies. */
export class UdpTunnel extends MasqueTunnel {
  constructor(init: TunnelInit) {
    super(init, [CAPSULE_TYPE.DATAGRAM]);
  }
}

/** Events of a CONNECT-IP tunnel. */
export type IpTunnelEvents = MasqueTunnelEvents & {
  /** The proxy assigned addresses: the full current list (empty: all removed). */
  addressAssign: [entries: IpPrefixEntry[]];
  /** The proxy asks us for addresses (network-to-network setups). */
  addressRequest: [entries: IpPrefixEntry[]];
  /** The proxy's routes: the full current list, superseding earlier ones. */
  routeAdvertisement: [ranges: IpAddressRange[]];
};

/**
 * A CONNECT-IP tunnel: IP packets as datagrams, plus the address and route capsules. The
 * latest lists received are kept in `assigned` and `routes`.
 */
export class IpTunnel extends MasqueTunnel<IpTunnelEvents> {
  /** Addresses the proxy assigned to us, from its latest ADDRESS_ASSIGN. */
  assigned: readonly IpPrefixEntry[] = [];
  /** Routes the proxy advertised, from its latest ROUTE_ADVERTISEMENT. */
  routes: readonly IpAddressRange[] = [];
  #nextRequestId = 1;

  constructor(init: TunnelInit) {
    super(init, Object.values(CAPSULE_TYPE));
  }

  /**
   * Sends an ADDRESS_REQUEST (default: any IPv4 address) and resolves with the proxy's answers
   * to it: the Assigned Addresses carrying our request IDs. An all-zero address with a full
   * prefix means refused (RFC 9484 §4.7.2).
   */
  async requestAddresses(
    wanted: readonly { version: 4 | 6; address?: string; prefixLength?: number }[] = [{ version: 4 }],
  ): Promise<IpPrefixEntry[]> {
    const entries = wanted.map((w) => ({
      requestId: this.#nextRequestId++,
      version: w.version,
      address: w.address ?? (w.version === 4 ? '0.0.0.0' : '::'),
      prefixLength: w.prefixLength ?? (w.version === 4 ? 32 : 128),
    }));
    const ids = new Set(entries.map((e) => e.requestId));
    const answered = new Promise<IpPrefixEntry[]>((resolve, reject) => {
      const onAssign = (assigned: IpPrefixEntry[]) => {
        const mine = assigned.filter((a) => ids.has(a.requestId));
        if (mine.length === 0) return;
        this.off('addressAssign', onAssign);
        this.off('close', onClose);
        resolve(mine);
      };
      const onClose = () => {
        this.off('addressAssign', onAssign);
        reject(
          this.error ?? new OxyError(OXY_ERR.UPSTREAM_FAILED, 'tunnel closed before the address assignment'),
        );
      };
      this.on('addressAssign', onAssign);
      this.once('close', onClose);
    });
    this.writeCapsule(encodeAddressRequest(entries));
    return answered;
  }

  /** Sends an ADDRESS_ASSIGN to the proxy (the full list of addresses we assign it). */
  assignAddresses(entries: readonly IpPrefixEntry[]): boolean {
    return this.writeCapsule(encodeAddressAssign(entries));
  }

  /** Sends a ROUTE_ADVERTISEMENT to the proxy (ranges in the RFC's order). */
  advertiseRoutes(ranges: readonly IpAddressRange[]): boolean {
    return this.writeCapsule(encodeRouteAdvertisement(ranges));
  }

  protected override handleCapsule(c: Capsule): void {
    if (c.type === CAPSULE_TYPE.ADDRESS_ASSIGN) {
      this.assigned = decodeAddressAssign(c.value);
      this.emit('addressAssign', [...this.assigned]);
    } else if (c.type === CAPSULE_TYPE.ADDRESS_REQUEST) {
      this.emit('addressRequest', decodeAddressRequest(c.value));
    } else if (c.type === CAPSULE_TYPE.ROUTE_ADVERTISEMENT) {
      this.routes = decodeRouteAdvertisement(c.value);
      this.emit('routeAdvertisement', [...this.routes]);
    }
  }
}
