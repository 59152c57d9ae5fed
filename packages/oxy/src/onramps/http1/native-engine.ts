/**
 * The native HTTP/1.1 forward engine's policy side. When an app leaves forwarding to the
 * framework (no request, response or body hooks, the default egress decision with no egress
 * hook that sees connections, no upstream proxy, no body limits), a plain TCP client connection
 * of an `http` endpoint is served by the addon (`packages/native/src/h1.c`): it parses each
 * request head in C, rewrites it as the JS engine does, sends it on a keep-alive upstream
 * connection from its own pool and relays the response, on the JS thread, with no JS per
 * request. JS hears once per loop turn of what happened, and here decides and records:
 *
 * - `route`: a request needs a new upstream connection. The egress pipeline runs as the JS
 *   pool runs it for a new connection (`connectDirect`: DNS or the literal, `blocked_cidrs`,
 *   Happy Eyeballs, `connect_timeout`, then `handleConnectionEstablished`), and the connected
 *   descriptor goes to the addon (a duplicate; the JS socket is then closed). A failure is
 *   answered here exactly as the exchange engine answers it (`failWith`).
 * - `done`: a finished request becomes the same `RequestState`, metrics, `handleRequestEnd`
 *   call and audit record the exchange engine makes (`recordEnd`). When nothing observes the
 *   record (no request-end hook, audit off, DEBUG off: `quiet`), the addon only counts the
 *   requests that end well on a pooled upstream connection; a batch's count goes to the
 *   requests metric (within a millisecond when no other event carries it), a connection's to
 *   `conn.requests` when it leaves the addon. This is the
 *   cost of S1's requests: no JS, no allocation per request.
 * - `fail`: an upstream failure (reset, timeout, malformed response) or a client failure (body
 *   cut short, body timeout): recorded and, before the response head left, answered here.
 * - `handBack`: a request outside the addon's subset (CONNECT, Upgrade, Expect, chunked
 *   bodies, HTTP/1.0, the HTTP/2 preface, a malformed or oversized head): nothing of it was
 *   acted on; the connection goes to the JS on-ramp with the bytes read, for good.
 *   A connection whose first bytes are already there and say CONNECT or the HTTP/2 preface is
 *   declined at `serve` instead (peeked, nothing read): the hand-back's round trip cost ~100 µs
 *   of CPU per intercepted tunnel (S8b).
 * - `expire`: `header_read_timeout` passed: answered as the JS on-ramp's sweep answers it.
 * - `closed`: the connection ended; the JS socket (which kept the original descriptor, for the
 *   ingress layer's accounting) is destroyed, its byte counters topped up with the addon's.
 *
 * Ordering rules: a connection is the addon's from `serve` until `handBack` or `closed`; the
 * JS socket is not read while the addon has it (Node's reads stop; what Node had read is given
 * to the addon first). The decision is made once per app: `nativeH1Applies`. `OXY_NATIVE_H1=0`
 * turns the engine off, `OXY_NATIVE_H1=1` on where it applies.
 */
import http from 'node:http';
import type net from 'node:net';
import { log } from 'foundations/telemetry';
import { formatHostPort } from '../../context/addr.ts';
import {
  EgressState,
  type EndpointState,
  type IngressConnection,
  RequestState,
} from '../../context/state.ts';
import { connectDirect, established } from '../../egress/connect.ts';
import { clientReason, httpStatusFor, isOxyError, OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import { countFailure, errorBody, recordEnd } from '../../flows/record.ts';
import { type Native, native } from '../../flows/stream/native-addon.ts';
import type { Runtime } from '../../runtime.ts';
import { httpSettingsOf } from '../../settings.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { countOutside } from './adopt.ts';
import { setUnread } from './connection-socket.ts';
import { NativeBodies } from './native-body.ts';
import { answerClientError } from './server.ts';

type H1 = Native['h1'];
type Engine = ReturnType<H1['h1Engine']>;
type RawEvent = Parameters<Parameters<H1['h1Engine']>[1]>[0][number];

/** On by default where it applies; `OXY_NATIVE_H1=0` off, `=1` on. */
const DEFAULT_ON = true;

/** True when the native engine may serve `endpoint`'s plain connections for `rt`. */
export function nativeH1Applies(rt: Runtime, endpoint: EndpointState): boolean {
  const env = process.env.OXY_NATIVE_H1;
  if (native === null || env === '0' || !(DEFAULT_ON || env === '1')) return false;
  const f = rt.fast;
  if (!f.nativeForward || !f.defaultEgress || !f.sharedPool || !f.literalEgress) return false;
  if (rt.defaultProxy !== null) return false;
  const ep = httpSettingsOf(endpoint.settings);
  return ep.max_request_body === 0 && ep.max_response_body === 0;
}

/** Node's own byte-counter symbols of a socket without a handle (as `splice.ts` uses them). */
interface TcpHandle {
  fd?: number;
  reading?: boolean;
  readStart?(): number;
  readStop?(): number;
}
type NodeSocket = net.Socket & { _handle: TcpHandle | null; _httpMessage?: unknown } & Record<
    symbol,
    unknown
  >;

/** One connection the addon serves. */
interface Served {
  readonly socket: NodeSocket;
  readonly conn: IngressConnection;
  /** The request whose upstream is being connected (made at `route`, recorded at its end). */
  pending: RequestState | null;
}

/**
 * Gives a connection to the JS on-ramp, Node reading it again with the bytes the addon read and
 * did not act on first; `first`: no request was served on it before (only then is the HTTP/2
 * preface looked for).
 */
export type HandBack = (socket: net.Socket, conn: IngressConnection, first: boolean) => void;

/** What the native engine did in this process (for tests and benchmarks). */
export const nativeH1Stats = { served: 0, handedBack: 0, requests: 0 };

/** Marks a socket as busy for the drain loop, which would `end()` an idle one under the addon. */
const BUSY_MARK = { native: true };

/** The engine of one endpoint: takes connections, and hears what the addon did with them. */
export class NativeH1 {
  readonly #rt: Runtime;
  readonly #endpoint: EndpointState;
  readonly #h1: H1;
  readonly #engine: Engine;
  readonly #served = new Map<number, Served>();
  readonly #handBack: HandBack;
  #nextId = 1;
  #closed = false;
  /** Whether the addon is told that nothing observes a record (it then counts instead). */
  #quiet = false;
  /** The app's response body filter at work on the addon's bodies (null: the app has none). */
  readonly #bodies: NativeBodies | null = null;

  constructor(rt: Runtime, endpoint: EndpointState, sweepMs: number, handBack: HandBack) {
    this.#rt = rt;
    this.#endpoint = endpoint;
    this.#h1 = (native as Native).h1;
    this.#handBack = handBack;
    rt.onDraining(() => {
      if (!this.#closed) this.#h1.h1Drain(this.#engine);
    });
    const ep = httpSettingsOf(endpoint.settings);
    this.#engine = this.#h1.h1Engine(
      {
        maxHeaderSize: ep.max_header_size,
        maxResponseHeaderSize: http.maxHeaderSize,
        headerTimeoutMs: ep.header_read_timeout,
        idleTimeoutMs: ep.idle_timeout,
        responseTimeoutMs: rt.settings.egress.response_timeout,
        bodyTimeoutMs: ep.body_read_timeout,
        poolIdleTimeoutMs: rt.settings.egress.pool_idle_timeout,
        poolMaxIdle: Math.max(1, rt.settings.egress.pool_max_idle),
        sweepMs,
      },
      (events, quiet) => this.#onEvents(events, quiet),
    );
    if (rt.hooks.responseBodyFilter !== null)
      this.#bodies = new NativeBodies(rt, this.#h1, this.#engine, {
        settle: (request, e, bytesUp, bytesDown) => this.#settle(request, e, bytesUp, bytesDown),
        answer: (id, request, e, bytesUp) => {
          const served = this.#served.get(id);
          if (served !== undefined) this.#answerFailure(id, served, request, e, bytesUp, false);
        },
      });
    this.#checkQuiet();
  }

  /**
   * Quiet mode follows what observes a record: checked at each batch (DEBUG may be turned on at
   * run time; requests that ended in the same loop turn are counted either way).
   */
  #checkQuiet(): void {
    const rt = this.#rt;
    const quiet = rt.hooks.requestEnd === null && !rt.audit.enabled && !log.enabled('DEBUG');
    if (quiet === this.#quiet || this.#closed) return;
    this.#quiet = quiet;
    this.#h1.h1Quiet(this.#engine, quiet);
  }

  /**
   * Gives `socket` to the addon, with what Node had read of it. False (the socket untouched,
   * for the JS on-ramp) when it cannot: not a plain TCP socket with a descriptor, or writes
   * still queued in Node.
   */
  serve(socket: net.Socket, conn: IngressConnection): boolean {
    const s = socket as NodeSocket;
    const h = s._handle;
    if ((s as { encrypted?: boolean }).encrypted === true || h === null || typeof h.fd !== 'number')
      return false;
    if (h.fd < 0 || s.destroyed || s.connecting || s.writableLength > 0) return false;
    if (this.#closed || this.#rt.draining) return false;
    // Node stops reading; what it read and nobody consumed goes to the addon first.
    s.pause();
    if (h.reading === true) {
      h.reading = false;
      h.readStop?.();
    }
    const early = s.readableLength > 0 ? (s.read() as Buffer | null) : null;
    const id = this.#nextId++;
    if (!this.#h1.h1Serve(this.#engine, h.fd, id, early)) {
      // Not taken (a CONNECT or the HTTP/2 preface waits in it, or no memory): Node reads it again.
      giveBack(s, early);
      return false;
    }
    const served: Served = { socket: s, conn, pending: null };
    this.#served.set(id, served);
    // The drain loop ends a connection with no response under way: the addon knows which.
    Object.defineProperty(s, '_httpMessage', {
      configurable: true,
      get: () => (!this.#closed && this.#h1.h1Busy(this.#engine, id) ? BUSY_MARK : null),
      set: () => {},
    });
    // Destroyed from outside (a drain's deadline, a shutdown): the addon lets go of the
    // descriptor before Node closes it (a number reused by the next accept must not be polled).
    const destroy = s._destroy;
    s._destroy = (err, cb) => {
      if (this.#served.get(id) === served) this.#release(id, served, this.#h1.h1Drop(this.#engine, id));
      destroy.call(s, err, cb);
    };
    nativeH1Stats.served++;
    return true;
  }

  /**
   * Closes the engine: its idle upstream connections and timers. Connections it still serves
   * are dropped (the endpoint is closing; their sockets are destroyed by the drain).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#countQuiet(this.#h1.h1Close(this.#engine));
  }

  /** Requests the addon counted instead of telling (quiet mode). */
  #countQuiet(quiet: number): void {
    if (quiet <= 0) return;
    nativeH1Stats.requests += quiet;
    this.#endpoint.metrics.forwardRequests.inc(quiet);
  }

  #onEvents(events: RawEvent[], quiet: number): void {
    this.#countQuiet(quiet);
    this.#checkQuiet();
    for (const ev of events) {
      const served = this.#served.get(ev[1]);
      if (served === undefined) continue;
      if (ev[0] !== 1 && ev[0] !== 7 && this.#bodies?.filtering(ev[1]) === true)
        this.#bodies.aborted(ev[1], abortReason(ev));
      switch (ev[0]) {
        case 1:
          this.#route(ev[1], served, ev);
          break;
        case 2:
          this.#done(served, ev);
          break;
        case 3:
          this.#fail(ev[1], served, ev);
          break;
        case 4:
          nativeH1Stats.handedBack++;
          this.#release(ev[1], served, ev[3]);
          giveBack(served.socket, ev[16]);
          // What the addon read and wrote on the connection counts as the socket's.
          countOutside(served.socket, ev[7], ev[8]);
          this.#handBack(served.socket, served.conn, ev[2] === 0);
          break;
        case 5:
          this.#connectionClosed(ev[1], served, ev);
          break;
        case 6:
          this.#release(ev[1], served, ev[3]);
          this.#expire(served, ev[2]);
          break;
        case 7: {
          // A response head with a body, for the app's filter (the request is JS's to record).
          const request = this.#request(served, ev);
          served.pending = request;
          request.status = ev[3];
          this.#bodies?.head(ev[1], request, ev[3], ev[16] as Buffer, ev[7]);
          break;
        }
      }
    }
  }

  /** The request an event is about: the one waiting for its upstream, or a new one. */
  #request(served: Served, ev: RawEvent): RequestState {
    const request = served.pending ?? this.#newRequest(served, ev);
    served.pending = null;
    return request;
  }

  /** A forwarded request of the event's method and target on `served`, counted. */
  #newRequest(served: Served, ev: RawEvent): RequestState {
    const request = new RequestState(
      served.conn,
      'forward',
      ev[12],
      { host: ev[13], port: ev[14] },
      this.#rt.ext,
    );
    served.conn.requests++;
    served.conn.endpoint.metrics.forwardRequests.inc();
    return request;
  }

  /** A new upstream connection, made as the JS pool makes one. */
  #route(id: number, served: Served, ev: RawEvent): void {
    const rt = this.#rt;
    const request = this.#newRequest(served, ev);
    served.pending = request;
    const eg = new EgressState(served.conn, request, request.target, rt.ext);
    connectDirect(rt, eg, request.target, false).then(
      ({ socket, remote }) => {
        const fd = (socket as NodeSocket)._handle?.fd;
        try {
          established(rt, eg, socket, remote);
        } catch (e) {
          this.#answerFailure(id, served, request, e, 0, false);
          return;
        }
        const taken =
          typeof fd === 'number' &&
          !this.#closed &&
          this.#h1.h1Adopt(this.#engine, id, fd, formatHostPort(remote.host, remote.port));
        socket.destroy();
        if (!taken && this.#served.get(id) === served && served.pending === request)
          this.#answerFailure(id, served, request, new Error('upstream connection unusable'), 0, false);
      },
      (e: unknown) => {
        if (this.#served.get(id) !== served || served.pending !== request) return;
        this.#answerFailure(
          id,
          served,
          request,
          toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'),
          0,
          false,
        );
      },
    );
  }

  #fill(request: RequestState, ev: RawEvent): void {
    const now = performance.now();
    (request as { startedAt: number }).startedAt = now - ev[9];
    if (ev[15] !== '') {
      request.upstreamAddr = ev[15];
      request.upstreamReused = ev[5] === 1;
    }
    request.connectedAt = ev[10] >= 0 ? now - ev[10] : 0;
    request.respondedAt = ev[11] >= 0 ? now - ev[11] : 0;
    request.decisions.push('egress:direct');
  }

  #record(request: RequestState, bytesUp: number, bytesDown: number, reason: string): void {
    const rt = this.#rt;
    if (rt.hooks.requestEnd !== null || log.enabled('DEBUG'))
      forkRequest(request, () => recordEnd(rt, request, bytesUp, bytesDown, reason));
    else recordEnd(rt, request, bytesUp, bytesDown, reason);
  }

  #done(served: Served, ev: RawEvent): void {
    nativeH1Stats.requests++;
    const request = this.#request(served, ev);
    this.#fill(request, ev);
    request.status = ev[3];
    this.#record(request, ev[7], ev[8], ev[2] === 5 ? 'client_closed' : 'done');
  }

  #fail(id: number, served: Served, ev: RawEvent): void {
    const request = this.#request(served, ev);
    this.#fill(request, ev);
    const e = failureOf(ev[2]);
    if (ev[4] === 1) {
      // The response head left: the client connection was cut (the addon closed it).
      this.#settle(request, e, ev[7], ev[8]);
      return;
    }
    this.#answerFailure(id, served, request, e, ev[7], ev[3] === 1 || ev[6] === 1, ev[12] === 'HEAD');
  }

  /** The exchange engine's `failWith` before the response: status, counts, record, answer. */
  #answerFailure(
    id: number,
    served: Served,
    request: RequestState,
    e: unknown,
    bytesUp: number,
    close: boolean,
    isHead = request.method === 'HEAD',
  ): void {
    if (served.pending === request) {
      served.pending = null;
      request.decisions.push('egress:direct');
    }
    const status = this.#settle(request, e, bytesUp, 0);
    const body = errorBody(status, clientReason(e));
    const last = close || this.#rt.draining;
    const text =
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${last ? 'Connection: close\r\n' : ''}\r\n${isHead ? '' : body}`;
    if (this.#served.get(id) === served && !this.#closed)
      this.#h1.h1Answer(this.#engine, id, Buffer.from(text, 'utf8'), last);
  }

  /** Records a failed request as `failWith` does; returns the status answered. */
  #settle(request: RequestState, e: unknown, bytesUp: number, bytesDown: number): number {
    const status = httpStatusFor(e);
    request.error = e;
    request.status = status;
    countFailure(request, status);
    this.#record(request, bytesUp, bytesDown, isOxyError(e) ? e.code : 'error');
    return status;
  }

  /** The connection leaves the addon, with the requests it counted on it in quiet mode. */
  #release(id: number, served: Served, quiet: number): void {
    served.conn.requests += quiet;
    this.#served.delete(id);
    restore(served.socket);
    served.pending = null;
  }

  #connectionClosed(id: number, served: Served, ev: RawEvent): void {
    this.#release(id, served, ev[3]);
    if (ev[2] === 1) served.conn.closeReason = 'drained';
    countOutside(served.socket, ev[7], ev[8]);
    served.socket.destroy();
  }

  /** `header_read_timeout` passed: as the JS on-ramp's sweep (`LeanConnection.expire`). */
  #expire(served: Served, phase: number): void {
    const { conn, socket } = served;
    if (phase !== 3) {
      conn.closeReason = 'header_timeout';
      ingressMetrics
        .connections_failed_total({ endpoint: this.#endpoint.name, reason: 'header_timeout' })
        .inc();
      socket.destroy();
      return;
    }
    answerClientError(this.#endpoint, conn, socket, 'ERR_HTTP_REQUEST_TIMEOUT');
  }
}

/** The socket as it was before the addon served it (its own `_destroy`, a plain `_httpMessage`). */
function restore(s: NodeSocket): void {
  delete (s as { _destroy?: unknown })._destroy;
  delete (s as { _httpMessage?: unknown })._httpMessage;
  s._httpMessage = null;
}

/**
 * Node reads the socket again, as before `serve` stopped it, with `bytes` (read, not acted on)
 * first. The handle reads again (as Node's `tryReadStart`): the on-ramp's parser may take it
 * over (`consumeIfPlain`), and reads only a reading one. The stream is neither paused nor
 * flowing, so the on-ramp's listeners start the flow.
 */
function giveBack(s: NodeSocket, bytes: Buffer | null): void {
  const h = s._handle;
  if (h !== null && h.reading !== true && typeof h.readStart === 'function') {
    h.reading = true;
    h.readStart();
  }
  setUnread(s);
  if (bytes !== null) s.unshift(bytes);
}

/** Why an exchange ended, for a body filter still at work (`BodyFilter.onAbort`). */
function abortReason(ev: RawEvent): string {
  if (ev[0] === 2) return ev[2] === 5 ? 'client_closed' : 'done';
  if (ev[0] === 3) return failureOf(ev[2]).code;
  return 'closed';
}

/** The error the exchange engine records for each failure the addon reports. */
function failureOf(kind: number): OxyError {
  switch (kind) {
    case 2:
      return new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' });
    case 3:
      return toOxyError(new Error('upstream sent a malformed response'), OXY_ERR.UPSTREAM_FAILED, 'upstream');
    case 4:
      return new OxyError(OXY_ERR.BODY_TIMEOUT, 'request body timeout', { source: 'downstream' });
    case 6:
      return new OxyError(OXY_ERR.BAD_REQUEST, 'request body cut short', { source: 'downstream' });
    default:
      return toOxyError(new Error('upstream closed the connection'), OXY_ERR.UPSTREAM_FAILED, 'upstream');
  }
}
