/**
 * The HTTP/1.1 on-ramp: the server side of the one HTTP/1.1 exchange engine, on any stream (a
 * plain TCP socket, a TLS socket from a TLS endpoint, an intercepted or tunnelled stream). Each
 * connection gets one object; requests are parsed by llhttp (`request-parser.ts`: Node's own
 * binding, strict, with `max_header_size`), heads and bodies, and then:
 *
 * - `CONNECT host:port` → the tunnel pipeline (the parser stops after the head);
 * - `Upgrade` → a protocol the proxy speaks itself (MASQUE's `connect-udp`, registered with
 *   `handleUpgradeProtocol`), or the forwarding upgrade pipeline (`flows/http/upgrade.ts`: the
 *   101 switches both sides into the stream runner);
 * - anything else → the exchange engine (`flows/http/exchange.ts`): absolute-form targets, and
 *   origin-form ones where the stream serves an origin ({@link Http1StreamOptions.origin});
 *   bodies in either framing with trailers, `Expect: 100-continue` carried upstream (the 100,
 *   or the final answer, relayed), HTTP/1.0 (no chunked framing: a body without a length ends
 *   with the connection). The response is framed straight onto the stream (`socket-response.ts`).
 * - The HTTP/2 preface (prior knowledge, cleartext, when HTTP/2 is on) → the HTTP/2 on-ramp,
 *   with the bytes read so far pushed back.
 *
 * Ordering rules: pipelined requests are parsed as they arrive and served one at a time, their
 * responses in order; while one is served, the stream is paused once another head is queued,
 * so what is buffered stays within one read. Bad input is answered as `node:http` answers it
 * (400 for a malformed head or body, 431 over `max_header_size`, 408 when a head takes longer
 * than `header_read_timeout`, 417 for an `Expect` other than `100-continue`) after the
 * responses before it, and closes the connection. A client that sends nothing within
 * `header_read_timeout` is closed; an idle keep-alive connection after `idle_timeout`.
 * Timeouts are checked by one sweep per endpoint, not a timer per connection.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { HttpPool } from '../../offramps/http/pool.ts';
import type { Runtime } from '../../runtime.ts';
import { httpSettingsOf } from '../../settings.ts';
import type { SocketOnRamp } from '../ingress.ts';
import { LeanConnection } from './connection.ts';
import {
  BUSY,
  type Http1StreamOptions,
  IDLE,
  kLean,
  type LeanSocket,
  onSocketClose,
  onSocketData,
  onSocketEnd,
  onSocketError,
  type Ramp,
} from './connection-socket.ts';
import { NativeH1, nativeH1Applies } from './native-engine.ts';
import { createHttp1OnRamp, type Http1OnRamp } from './server.ts';

export type { Http1StreamOptions } from './connection-socket.ts';

/**
 * How often the sweep looks: half the shorter timeout (so a deadline is missed by at most half
 * of it), between 100 ms and 1 s. A timeout of 0 is off and does not count.
 */
export function sweepInterval(headerTimeoutMs: number, idleTimeoutMs: number): number {
  const on = [headerTimeoutMs, idleTimeoutMs].filter((t) => t > 0);
  return on.length === 0 ? 1000 : Math.max(100, Math.min(1000, Math.min(...on) / 2));
}

/** The on-ramp's handle. */
export interface LeanOnRamp extends SocketOnRamp {
  /** Connections it still owns (reading a head, or with a request under way). */
  readonly size: number;
  close(): void;
}

/** Each endpoint's ramp, for {@link serveHttp1Stream}. */
const ramps = new WeakMap<EndpointState, Ramp>();

function startConnection(
  ramp: Ramp,
  stream: Duplex,
  conn: IngressConnection,
  options: Http1StreamOptions,
  sniff: boolean,
): void {
  const c = new LeanConnection(stream, conn, ramp, options, sniff);
  const s = stream as LeanSocket;
  s[kLean] = c;
  ramp.live.add(c);
  s.on('error', onSocketError);
  s.on('end', onSocketEnd);
  s.on('close', onSocketClose);
  s.on('data', onSocketData);
  // Without HTTP/2 to look for, a plain TCP socket is read by the parser from the start.
  c.consumeIfPlain();
}

const NO_OPTIONS: Http1StreamOptions = {};

/**
 * Creates the HTTP/1.1 on-ramp of `endpoint` (cleartext sockets and TLS sockets alike); `h1`
 * holds the upstream pool and the `Upgrade` protocols, `http2` (or null when HTTP/2 is off)
 * takes a cleartext connection that opens with the preface.
 */
export function createLeanOnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  h1: Http1OnRamp,
  http2: ((socket: net.Socket, conn: IngressConnection) => void) | null,
): LeanOnRamp {
  const ep = httpSettingsOf(endpoint.settings);
  const ramp: Ramp = {
    rt,
    endpoint,
    h1,
    http2,
    live: new Set(),
    maxHeaderSize: ep.max_header_size,
    headerTimeout: ep.header_read_timeout,
    idleTimeout: ep.idle_timeout,
  };
  ramps.set(endpoint, ramp);
  const every = sweepInterval(ep.header_read_timeout, ep.idle_timeout);
  // The addon's engine (`native-engine.ts`) serves plain connections where it applies; what it
  // hands back comes here as a new connection would (the bytes it read unshifted there).
  const nativeH1 = nativeH1Applies(rt, endpoint)
    ? new NativeH1(rt, endpoint, every, (socket, conn, first) =>
        startConnection(ramp, socket, conn, NO_OPTIONS, first && http2 !== null),
      )
    : null;
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const c of ramp.live) {
      if (c.phase === BUSY) continue;
      const limit = c.phase === IDLE ? ramp.idleTimeout : ramp.headerTimeout;
      if (limit > 0 && now - c.since >= limit) c.expire();
    }
  }, every).unref();
  const onRamp: LeanOnRamp = {
    protocol: 'http/1.1',
    get size() {
      return ramp.live.size;
    },
    close(): void {
      clearInterval(sweep);
      nativeH1?.close();
      if (ramps.get(endpoint) === ramp) ramps.delete(endpoint);
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      // HTTP/2 prior knowledge is looked for on cleartext sockets only (TLS chose by ALPN).
      const sniff = http2 !== null && (socket as { encrypted?: boolean }).encrypted !== true;
      if (nativeH1?.serve(socket, conn) === true) return;
      startConnection(ramp, socket, conn, NO_OPTIONS, sniff);
    },
  };
  return onRamp;
}

/**
 * Serves HTTP/1.1 on `stream` (any Duplex: a TLS socket, a decrypted intercepted stream, the
 * bytes of a tunnel) for `endpoint`, whose `http` on-ramp must exist (its upstream pool,
 * `Upgrade` protocols, timeouts and sweep serve this stream too). Requests go through the same
 * pipeline as the endpoint's own: hooks, egress, audit records (with `options.kind`).
 * Origin-form requests go to `options.origin`; without it they are refused with 400. The stream
 * is read from now on; a stream without a descriptor is written through its own `write`.
 * Throws `OXY_ERR_INVALID_APP` when the endpoint has no HTTP on-ramp.
 */
export function serveHttp1Stream(
  rt: Runtime,
  endpoint: EndpointState,
  stream: Duplex,
  conn: IngressConnection,
  options: Http1StreamOptions = NO_OPTIONS,
): void {
  startConnection(rampOf(rt, endpoint), stream, conn, options, false);
  if (stream.isPaused()) stream.resume();
}

/**
 * The keep-alive upstream pool of `endpoint`'s HTTP on-ramp, for requests read elsewhere on its
 * behalf (HTTP/2 inside an intercepted tunnel). Throws `OXY_ERR_INVALID_APP` when it has none.
 */
export function endpointPool(rt: Runtime, endpoint: EndpointState): HttpPool {
  return rampOf(rt, endpoint).h1.pool;
}

/**
 * The ramp of `endpoint`: its HTTP on-ramp's, or, for an endpoint that is not `http` (a `tcp`
 * endpoint, an IP tunnel, whose streams a hook sent to HTTP), one made on first use with the
 * HTTP defaults (`httpSettingsOf`), its own upstream pool and timeout sweep. Throws
 * `OXY_ERR_INVALID_APP` for an `http` endpoint whose on-ramp is gone.
 */
function rampOf(rt: Runtime, endpoint: EndpointState): Ramp {
  const ramp = ramps.get(endpoint);
  if (ramp !== undefined && ramp.rt === rt) return ramp;
  if (endpoint.settings.protocol === 'http')
    throw new OxyError(OXY_ERR.INVALID_APP, `endpoint ${endpoint.name} has no HTTP/1.1 on-ramp`);
  createLeanOnRamp(rt, endpoint, createHttp1OnRamp(rt), null);
  return ramps.get(endpoint) as Ramp;
}
