/**
 * The HTTP/1.1 client of the proxy: every forwarded request (HTTP/1.1 and HTTP/2 on-ramps, any
 * body) goes upstream through this keep-alive pool. The request head is serialised by the
 * caller and written in one call; a body follows, streamed with backpressure in its framing
 * (`Content-Length` as given, or chunked with trailers); the response is parsed by llhttp (the
 * same native parser, in strict mode, that `node:http` uses) and handed to a sink as it
 * arrives, trailers included. One object per connection carries its listeners for life; a
 * request costs one object.
 *
 * New connections come from the egress pipeline (`connectDirect`, then
 * `handleConnectionEstablished`); an `https` target then gets TLS from `connectTls`
 * (`offramps/tls/connect.ts`: verified against `rt.upstreamTrust`, ALPN `http/1.1`; a
 * verification failure is a 502 naming the reason, never a retry in the clear). With
 * `egress.tls.http2` on, `https` requests go to the HTTP/2 upstream first
 * (`offramps/http2/session-pool.ts`): it offers ALPN `h2, http/1.1`, keeps origins that chose
 * h2, and hands back (`requestOn`, then `request` again) those that chose HTTP/1.1. Pool keys are
 * the caller's and name the scheme (`flows/http/exchange.ts`, `routeFor`, says why they may
 * include the client connection's id).
 *
 * Ordering rules: a connection returns to the pool only after a complete response that llhttp
 * says may be followed by another, and only once the request body was sent whole; anything
 * unexpected (bytes without a request, a parse error, a 101) destroys it. 1xx answers go to the
 * sink's `onInformational` (a `100 Continue` is relayed) and the final answer follows. A
 * bodiless idempotent request that fails on a reused connection before any response byte (the
 * upstream closed it while it sat idle) is retried once on a new connection; nothing else is.
 * `egress.response_timeout` runs from the end of the request (its body sent) to the response
 * head.
 */
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EgressState } from '../../context/state.ts';
import { connectDirect, established } from '../../egress/connect.ts';
import { OXY_ERR, type OxyError, toOxyError } from '../../errors.ts';
import type { Runtime } from '../../runtime.ts';
import { Http2Upstream } from '../http2/session-pool.ts';
import { connectTls } from '../tls/connect.ts';
import { Exchange, UpstreamConnection } from './connection.ts';

/** Where a response goes, as it arrives. Exactly one of `onEnd` and `onError` is called, once. */
export interface ResponseSink {
  /**
   * The exchange got its upstream connection (`ip:port`), reused from the pool or new; called
   * again if a reused one turned out closed and the request is retried on a new one.
   * `protocol` is `h2` for a stream of an HTTP/2 session, absent for HTTP/1.1.
   */
  onUpstream(upstream: string, reused: boolean, protocol?: 'h2'): void;
  /** A 1xx answer other than 101 (`100 Continue`, `103 Early Hints`); the final one follows. */
  onInformational(status: number, rawHeaders: string[]): void;
  /** The final (non-1xx) response head; `rawHeaders` is `[name, value, …]` as received. */
  onHead(status: number, statusText: string, rawHeaders: string[]): void;
  /** A piece of the body. Return false to pause the upstream until `resume` is called. */
  onBody(chunk: Buffer, resume: () => void): boolean;
  /**
   * The response is complete; `last` is a final piece of body not yet given to `onBody`,
   * `trailers` the trailer fields of a chunked body (`[name, value, …]`), if any.
   */
  onEnd(last: Buffer | null, trailers: string[] | null): void;
  /** The exchange failed; `responded` says whether `onHead` was called. */
  onError(e: OxyError, responded: boolean): void;
}

/** Where a request body is written, once its head left. */
export interface BodyOut {
  /** Sends a piece (framed when chunked); false when the connection is full: wait for `onDrain`. */
  write(chunk: Buffer): boolean;
  /** Calls `fn` once the connection can take more. */
  onDrain(fn: () => void): void;
  /** The body is complete; `trailers` (`[name, value, …]`) are sent when the body is chunked. */
  end(trailers: readonly string[] | null): void;
}

/** A request body the pool sends after the head. */
export interface RequestBody {
  /** True: chunked framing (the head says `Transfer-Encoding: chunked`); false: as the head's `Content-Length` says. */
  readonly chunked: boolean;
  /** The head left on a connection: send the body through `out`. Called at most once. */
  start(out: BodyOut): void;
}

/** What the pool needs to open a connection when none is idle. */
export interface UpstreamTarget {
  /** The pool key: names the scheme, the address and, when it matters, the client connection. */
  readonly key: string;
  readonly egress: EgressState;
  /** The address to connect to: the decided target or the upstream proxy. */
  readonly addr: SocketAddr;
  /** True for an upstream proxy: no `handleUpstreamIps`, no blocklist. */
  readonly trusted: boolean;
  /** For an `https` origin: the name (or IP literal) its certificate must match; null in the clear. */
  readonly tls: string | null;
}

/** A request the pool is sending; `abort` drops it and the connection it uses. */
export interface PendingRequest {
  abort(): void;
}

/** Keep-alive upstream connections per pool key, most recently used first. */
export class HttpPool {
  readonly #rt: Runtime;
  readonly #idle = new Map<string, UpstreamConnection[]>();
  readonly #maxIdle: number;
  readonly idleTimeout: number;
  /** `egress.response_timeout`: longest wait for a response head (0: none). */
  readonly responseTimeout: number;
  /** The HTTP/2 client for `https` origins (`egress.tls.http2`), or null. */
  readonly http2: Http2Upstream | null;
  #closed = false;

  constructor(rt: Runtime) {
    this.#rt = rt;
    this.#maxIdle = Math.max(1, rt.settings.egress.pool_max_idle);
    this.idleTimeout = rt.settings.egress.pool_idle_timeout;
    this.responseTimeout = rt.settings.egress.response_timeout;
    this.http2 = rt.settings.egress.tls.http2 ? new Http2Upstream(rt, this) : null;
  }

  /**
   * Sends a request to `target`, on an idle connection or a new one: `head` is the whole
   * serialised head (ending in an empty line, its framing fields matching `body`), `body` what
   * follows it (null: none). The response goes to `sink`.
   */
  request(
    target: UpstreamTarget,
    method: string,
    head: string,
    sink: ResponseSink,
    body: RequestBody | null = null,
  ): PendingRequest {
    if (target.tls !== null && this.http2 !== null) {
      const h2 = this.http2.request(target, method, head, sink, body);
      if (h2 !== null) return h2; // null: an origin known to speak HTTP/1.1
    }
    const ex = new Exchange(target, method, head, sink, body);
    const list = this.#idle.get(target.key);
    let conn = list?.pop();
    // A socket Node destroyed (a write error) whose events have not run yet is not reused.
    while (conn?.socket.destroyed === true) {
      conn.destroy();
      conn = list?.pop();
    }
    if (conn !== undefined) {
      if ((list as UpstreamConnection[]).length === 0) this.#idle.delete(target.key);
      ex.reused = true;
      ex.conn = conn;
      sink.onUpstream(conn.upstream, true);
      conn.send(ex);
    } else {
      this.#open(ex);
    }
    return ex;
  }

  #open(ex: Exchange): void {
    const rt = this.#rt;
    const t = ex.target;
    const failed = (e: unknown): void => {
      if (!ex.aborted) ex.sink.onError(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'), false);
    };
    connectDirect(rt, t.egress, t.addr, t.trusted).then(({ socket, remote }) => {
      if (ex.aborted || this.#closed) {
        socket.destroy();
        return;
      }
      try {
        established(rt, t.egress, socket, remote);
      } catch (e) {
        socket.destroy();
        failed(e);
        return;
      }
      if (t.tls === null) {
        this.#start(ex, socket, remote);
        return;
      }
      // Verified TLS over the connection egress made; a failure is the exchange's (502 with
      // the reason), never a retry in the clear.
      connectTls({
        host: t.tls,
        port: t.addr.port,
        trust: rt.upstreamTrust,
        socket,
        alpn: ['http/1.1'],
        timeoutMs: rt.settings.egress.connect_timeout,
      }).then(({ socket: tlsSocket }) => {
        if (ex.aborted || this.#closed) tlsSocket.destroy();
        else this.#start(ex, tlsSocket, remote);
      }, failed);
    }, failed);
  }

  /**
   * Sends a request (as `request` does) on `socket`, a verified connection to `remote` opened
   * elsewhere: the HTTP/2 upstream's, when the origin chose HTTP/1.1 in ALPN. The connection
   * joins the pool afterwards like one opened here.
   */
  requestOn(
    socket: Duplex,
    remote: SocketAddr,
    target: UpstreamTarget,
    method: string,
    head: string,
    sink: ResponseSink,
    body: RequestBody | null,
  ): PendingRequest {
    const ex = new Exchange(target, method, head, sink, body);
    this.#start(ex, socket, remote);
    return ex;
  }

  #start(ex: Exchange, socket: Duplex, remote: SocketAddr): void {
    const conn = new UpstreamConnection(this, ex.target.key, socket, remote);
    ex.conn = conn;
    ex.sink.onUpstream(conn.upstream, false);
    conn.send(ex);
  }

  /** Sends an exchange again on a new connection (its reused one turned out to be closed). */
  retry(ex: Exchange): void {
    ex.reused = false;
    ex.gotBytes = false;
    ex.sent = false;
    ex.conn = null;
    this.#open(ex);
  }

  /** Puts a connection back after a complete response (or closes it if the pool is full). */
  release(conn: UpstreamConnection): void {
    if (this.#closed) {
      conn.destroy();
      return;
    }
    let list = this.#idle.get(conn.key);
    if (list === undefined) {
      list = [];
      this.#idle.set(conn.key, list);
    }
    if (list.length >= this.#maxIdle) conn.destroy();
    else list.push(conn);
  }

  /**
   * Adds an established connection made elsewhere to the idle list of `key`, as if a request
   * had just finished on it: an intercepted tunnel's origin connection, verified for the name
   * `key` names (`tunnels/inspect.ts`), so that the tunnel's first request does not open a
   * second one. Closed instead when a connection of `key` is already idle (the request takes
   * that one; a second would only wait out its idle timeout) or the pool is closed. A TLS
   * connection whose ALPN chose `h2` becomes a session of the HTTP/2 upstream instead (closed
   * when that is off); one that chose HTTP/1.1 tells the HTTP/2 upstream so.
   */
  adopt(key: string, socket: Duplex, remote: SocketAddr, alpn: 'h2' | 'http/1.1' = 'http/1.1'): void {
    if (alpn === 'h2') {
      if (this.http2 === null || this.#closed) socket.destroy();
      else this.http2.adopt(key, socket as tls.TLSSocket, remote);
      return;
    }
    this.http2?.learnedHttp1(key);
    if (this.#closed || socket.destroyed || this.#idle.has(key)) socket.destroy();
    else this.release(new UpstreamConnection(this, key, socket, remote));
  }

  /**
   * True when the next request to `key` has a verified connection waiting: an idle HTTP/1.1
   * connection, or an open HTTP/2 session of an origin that chose h2.
   */
  hasIdle(key: string): boolean {
    if (this.#idle.has(key)) return true;
    const h2 = this.http2;
    return h2 !== null && h2.protocolOf(key) === 'h2' && h2.sessionsOf(key).length > 0;
  }

  /** Removes a closed connection from the idle lists. */
  forget(conn: UpstreamConnection): void {
    const list = this.#idle.get(conn.key);
    if (list === undefined) return;
    const i = list.indexOf(conn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#idle.delete(conn.key);
  }

  /** Closes every idle connection; requests in flight finish, their connections then close. */
  destroy(): void {
    this.#closed = true;
    this.http2?.destroy();
    for (const list of [...this.#idle.values()]) for (const c of [...list]) c.destroy();
    this.#idle.clear();
  }
}
