/**
 * The socket side of an HTTP/1.1 on-ramp connection (`connection.ts`): how a stream is served
 * (`Http1StreamOptions`), the endpoint-wide `Ramp`, the states the timeout sweep reads, the
 * socket's event handlers (bound once, dispatching through `kLean` to the connection), and the
 * two ways a socket is left: unread for its next owner, or closed once flushed.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { RequestKind, SocketAddr } from '../../context/contexts.ts';
import type { EndpointState, IngressConnection, RequestState } from '../../context/state.ts';
import type { Runtime } from '../../runtime.ts';
import type { LeanConnection } from './connection.ts';
import type { Http1OnRamp } from './server.ts';

/** How `serveHttp1Stream` (`lean.ts`) serves a stream. */
export interface Http1StreamOptions {
  /** The audit record's request kind of the requests on it (e.g. `intercepted`); default `forward`. */
  readonly kind?: RequestKind;
  /** The request the stream came in on (the tunnel of an intercepted or tunnelled stream). */
  readonly parent?: RequestState;
  /**
   * Origin-form requests (`GET /path`) go to this origin; without it they are refused (400).
   * `addr` is where it is (default: parsed from `authority`), `serverName` the name an https
   * origin's certificate must match (default: `addr`'s host).
   */
  readonly origin?: {
    readonly scheme: 'http' | 'https';
    readonly authority: string;
    readonly addr?: SocketAddr;
    readonly serverName?: string;
  };
}

// What a connection waits for, for the timeout sweep.
/** A request is being served, or the connection left this on-ramp. */
export const BUSY = 0;
/** Nothing received yet. */
export const SILENT = 1;
/** Between keep-alive requests. */
export const IDLE = 2;
/** Part of a head received. */
export const HEAD = 3;

export const kLean = Symbol('oxy.lean');
export type LeanSocket = Duplex & { [kLean]?: LeanConnection; _httpMessage?: unknown };

export function onSocketData(this: LeanSocket, chunk: Buffer): void {
  this[kLean]?.data(chunk);
}
export function onSocketEnd(this: LeanSocket): void {
  this[kLean]?.clientEnded();
}
export function onSocketClose(this: LeanSocket): void {
  this[kLean]?.closed();
}
/** Leaves `socket` as `node:http` leaves an upgraded one: not flowing, the next reader starts it. */
export function setUnread(socket: Duplex): void {
  (socket as { readableFlowing: boolean | null }).readableFlowing = null;
}
/** Closes `s` once what was written is flushed, even if the client keeps its side open. */
export function closeSoon(s: Duplex): void {
  const sock = s as Partial<net.Socket>;
  if (typeof sock.destroySoon === 'function') {
    sock.destroySoon();
    return;
  }
  s.once('finish', () => s.destroy());
  s.end();
}

/** Errors end in 'close'; the exchange or tunnel reports what it needs. */
export function onSocketError(): void {}

/** The endpoint-wide part: settings, the pool, the sweep, the on-ramps to hand over to. */
export interface Ramp {
  readonly rt: Runtime;
  readonly endpoint: EndpointState;
  readonly h1: Http1OnRamp;
  readonly http2: ((socket: net.Socket, conn: IngressConnection) => void) | null;
  readonly live: Set<LeanConnection>;
  readonly maxHeaderSize: number;
  readonly headerTimeout: number;
  readonly idleTimeout: number;
}
