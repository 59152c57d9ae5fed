/**
 * A CONNECT whose head the addon's reactor thread read (`reactor-connect.ts`), as the tunnel
 * pipeline sees it: a `ConnectExchange` like `Http1ConnectExchange`, whose client is a
 * descriptor the listener holds rather than a socket. The whole-tunnel path asks the listener
 * to connect and carry it (`connect`, a `ReactorClient`); anything that needs the client in JS
 * (a refusal to answer, a route the addon cannot take, a failed connect's 502 or 504) turns the
 * descriptor into a socket first, and from then on it is exactly `Http1ConnectExchange` on that
 * socket, as today's path would have had it.
 *
 * Ordering rules: the descriptor is the listener's, the addon's (between `connect` and the
 * record) or the socket's, never two at once; `ended` resolves `connect`'s promise after
 * `onConnected`, as `spliceConnect` does.
 */
import { closeSync } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ReactorClient } from '../../egress/whole-tunnel.ts';
import { rawToHeaders } from '../../flows/http/headers.ts';
import { type Native, native } from '../../flows/stream/native-addon.ts';
import type { PumpCloseReason, PumpOptions } from '../../flows/stream/pump.ts';
import { type RawClient, RawTunnel } from '../../flows/stream/raw-tunnel.ts';
import {
  type SpliceConnectResult,
  type SpliceConnectTarget,
  tunnelTarget,
} from '../../flows/stream/splice.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { ConnectExchange, SpliceableClient } from '../../tunnels/connect.ts';
import { setUnread } from './connection-socket.ts';
import type { ConnectListener } from './reactor-connect.ts';
import { Http1ConnectExchange } from './server.ts';

/** The answer to a CONNECT no hook changed (as `Http1ConnectExchange`'s). */
const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');
/** Record kinds (src/splice.h). */
const KIND_CONNECT = 2;
const KIND_ABORT = 3;

/** A client that never had a handle in JS: the addon owns its descriptor. */
const ADOPTED: RawClient = { fd: -1, closeHandle() {}, track() {} };

function ignore(): void {}

/** A carried tunnel's header lines: let go (see `adopt`). */
const NO_HEADERS: readonly string[] = [];

/** One CONNECT read by the reactor thread. */
export class ReactorConnectExchange implements ConnectExchange, ReactorClient {
  readonly #listener: ConnectListener;
  readonly #authority: string;
  /** The head's header lines until the tunnel is carried on (see `adopt`). */
  #rawHeaders: readonly string[];
  /** The client's descriptor while JS holds it (-1: the addon's, or a socket's). */
  #fd: number;
  /** The descriptor still counts as the listener's (a head it posted): released when JS keeps it. */
  #counted = true;
  #ex: Http1ConnectExchange | null = null;
  #socket: net.Socket | null = null;
  #head: RequestHead | null = null;
  #aborted = false;
  /** The addon's tunnel: running (its id), adopted, and how it reports. */
  #id = 0;
  #run: RawTunnel | null = null;
  #early = 0;
  #options: PumpOptions | null = null;
  #onConnected: ((connectMs: number) => void) | null = null;
  #resolve: ((r: SpliceConnectResult) => void) | null = null;

  constructor(listener: ConnectListener, fd: number, authority: string, rawHeaders: readonly string[]) {
    this.#listener = listener;
    this.#fd = fd;
    this.#authority = authority;
    this.#rawHeaders = rawHeaders;
  }

  get head(): RequestHead {
    if (this.#ex !== null) return this.#ex.head;
    this.#head ??= {
      method: 'CONNECT',
      scheme: '',
      authority: this.#authority,
      path: '',
      headers: rawToHeaders(this.#rawHeaders),
    };
    return this.#head;
  }

  get closed(): boolean {
    return this.#ex !== null ? this.#ex.closed : this.#aborted;
  }

  accept(res: ResponseHead): Duplex {
    return this.#exchange().accept(res);
  }

  reject(status: number, body: string): void {
    this.#exchange().reject(status, body);
  }

  spliceable(): SpliceableClient | null {
    if (this.#ex !== null) return this.#ex.spliceable();
    if (this.#fd < 0) return null;
    return { socket: null, reactor: this, early: null, head: ESTABLISHED };
  }

  /** The client as a socket (made now), unless the addon holds its descriptor. */
  clientStream(): Duplex | null {
    if (this.#ex === null && this.#fd < 0) return null;
    return this.#exchange().clientStream();
  }

  /** The exchange on a socket of the client's descriptor, made on first need. */
  #exchange(): Http1ConnectExchange {
    if (this.#ex !== null) return this.#ex;
    const fd = this.#fd;
    this.#fd = -1;
    this.#release();
    const socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    socket.on('error', ignore); // errors end in 'close', as the on-ramp's sockets
    // As the on-ramp leaves a CONNECT socket: nobody reading, the tunnel's reader starts it.
    socket.pause();
    setUnread(socket);
    this.#socket = socket;
    this.#ex = new Http1ConnectExchange(this.#authority, this.#rawHeaders, socket, null);
    return this.#ex;
  }

  #release(): void {
    if (!this.#counted) return;
    this.#counted = false;
    (native as Native).releaseAccepted(this.#listener);
  }

  /** ReactorClient: the listener connects to `to`, answers and carries the tunnel. */
  connect(
    to: SpliceConnectTarget,
    options: PumpOptions,
    onConnected: (connectMs: number) => void,
  ): Promise<SpliceConnectResult> {
    const fd = this.#fd;
    this.#fd = -1;
    this.#counted = false; // the tunnel's now: its record is the end of the count
    this.#id = this.#listener.register(this);
    this.#early = to.early?.length ?? 0;
    this.#options = options;
    this.#onConnected = onConnected;
    const done = new Promise<SpliceConnectResult>((resolve) => {
      this.#resolve = resolve;
    });
    (native as Native).connectAccepted(this.#listener, this.#id, fd, tunnelTarget(to));
    return done;
  }

  /** The listener's record of the tunnel's end (src/accept.c's fields). */
  ended(
    kind: number,
    b01: number,
    b10: number,
    errno: number,
    side: number,
    connectMs: number,
    fd: number,
  ): void {
    const n = native as Native;
    this.#id = 0;
    if (kind === KIND_CONNECT) {
      // Nothing was written to the client: it is JS's again, to be answered 502 or 504.
      this.#fd = fd;
      this.#settle({
        bytesUp: 0,
        bytesDown: 0,
        reason: 'upstream_error',
        error: undefined,
        connectError: n.errnoName(errno),
      });
      return;
    }
    if (connectMs >= 0) this.#connected(connectMs);
    let reason: PumpCloseReason = 'done';
    let error: Error | undefined;
    if (kind === KIND_ABORT) reason = 'client_reset';
    else if (kind !== 0) {
      const end = n.spliceEnd(kind, b01, b10, errno, side);
      error = end.error;
      reason = end.side === 0 ? 'client_error' : end.side === 1 ? 'upstream_error' : 'aborted';
    }
    this.#settle({ bytesUp: this.#early + b01, bytesDown: b10, reason, error, connectError: null });
  }

  /**
   * The tunnel runs on: from now on a raw tunnel's owner reports it (the sweeps, a drain's stop).
   * Its header lines are let go (an idle tunnel kept their array and strings): the descriptor
   * never comes back to JS to be answered, and the head is read by the CONNECT hook only, before
   * the route (`tunnels/connect.ts`); a head read later has the authority and no headers.
   */
  adopt(): RawTunnel {
    this.#id = 0;
    this.#rawHeaders = NO_HEADERS;
    const resolve = this.#resolve as (r: SpliceConnectResult) => void;
    this.#resolve = null;
    const run = new RawTunnel(
      ADOPTED,
      this.#early,
      this.#options as PumpOptions,
      (ms) => this.#connected(ms),
      resolve,
    );
    run.adopt();
    this.#run = run;
    return run;
  }

  #connected(connectMs: number): void {
    const cb = this.#onConnected;
    this.#onConnected = null;
    cb?.(connectMs);
  }

  #settle(r: SpliceConnectResult): void {
    const resolve = this.#resolve;
    this.#resolve = null;
    resolve?.(r);
  }

  /** A drain's deadline: ends the tunnel, the socket or the held descriptor now. */
  abort(): void {
    this.#aborted = true;
    if (this.#run !== null) this.#run.stop('client_reset');
    else if (this.#id !== 0) (native as Native).abortAccepted(this.#listener);
    else this.#socket?.destroy();
  }

  /** Calls `fn` once the client is gone (its socket closed); a descriptor still held is closed. */
  whenClosed(fn: () => void): void {
    const s = this.#socket;
    if (this.#fd >= 0) {
      // Never answered nor carried (a drain ended it while the policy ran): let go of it.
      closeSync(this.#fd);
      this.#fd = -1;
      this.#release();
    }
    if (s === null || s.destroyed) {
      fn();
      return;
    }
    s.once('close', fn);
  }
}
