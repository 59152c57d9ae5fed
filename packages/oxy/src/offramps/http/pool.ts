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
 * verification failure is a 502 naming the reason, never a retry in the clear). Pool keys are
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
import http from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EgressState } from '../../context/state.ts';
import { connectDirect, established } from '../../egress/connect.ts';
import { OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import { offloadWrites, writeDirect } from '../../flows/stream/offload.ts';
import type { Runtime } from '../../runtime.ts';
import { connectTls } from '../tls/connect.ts';

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  consume(handle: StreamHandle): void;
  unconsume(): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  [callback: number]: unknown;
}
interface NativeParserClass {
  new (): NativeParser;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
}
/** A libuv stream handle (`socket._handle`) the native parser can read from directly. */
interface StreamHandle {
  readonly isStreamBase?: boolean;
  _consumed?: boolean;
  readStart(): number;
  readStop(): number;
}
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as { HTTPParser: NativeParserClass };

/** Where a response goes, as it arrives. Exactly one of `onEnd` and `onError` is called, once. */
export interface ResponseSink {
  /**
   * The exchange got its upstream connection (`ip:port`), reused from the pool or new; called
   * again if a reused one turned out closed and the request is retried on a new one.
   */
  onUpstream(upstream: string, reused: boolean): void;
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

/** Methods a request may be sent twice with (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** One request: what was sent, where its response goes, and how far it got. */
class Exchange implements PendingRequest {
  readonly head: string;
  readonly isHead: boolean;
  readonly sink: ResponseSink;
  readonly target: UpstreamTarget;
  readonly body: RequestBody | null;
  /** A bodiless idempotent request: may be sent again if a reused connection turns out closed. */
  readonly retriable: boolean;
  /** On a connection reused from the pool (a failure before the response may be retried). */
  reused = false;
  responded = false;
  gotBytes = false;
  aborted = false;
  /** The request (head and body) was sent whole. */
  sent = false;
  pending: Buffer | null = null;
  conn: UpstreamConnection | null = null;
  /** Fires when no response head arrived within `egress.response_timeout` of the request's end. */
  timer: NodeJS.Timeout | undefined;

  constructor(
    target: UpstreamTarget,
    method: string,
    head: string,
    sink: ResponseSink,
    body: RequestBody | null,
  ) {
    this.target = target;
    this.head = head;
    this.isHead = method === 'HEAD';
    this.sink = sink;
    this.body = body;
    this.retriable = body === null && IDEMPOTENT.has(method);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    clearTimeout(this.timer);
    const c = this.conn;
    if (c !== null && c.exchange === this) {
      c.exchange = null;
      c.destroy();
    }
  }
}

/** The request body's way onto one connection; writes after the exchange left it are dropped. */
class ConnectionBodyOut implements BodyOut {
  readonly #conn: UpstreamConnection;
  readonly #ex: Exchange;
  readonly #chunked: boolean;
  #ended = false;

  constructor(conn: UpstreamConnection, ex: Exchange, chunked: boolean) {
    this.#conn = conn;
    this.#ex = ex;
    this.#chunked = chunked;
  }

  #live(): boolean {
    return !this.#ended && this.#conn.exchange === this.#ex && !this.#conn.dead;
  }

  write(chunk: Buffer): boolean {
    if (!this.#live() || chunk.length === 0) return true;
    const s = this.#conn.socket;
    if (chunk.length > 65536 && s.writableLength === 0) this.#conn.offload();
    if (!this.#chunked) return s.write(chunk);
    s.cork();
    s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    s.write(chunk);
    const ok = s.write('\r\n', 'latin1');
    s.uncork();
    return ok;
  }

  onDrain(fn: () => void): void {
    this.#conn.socket.once('drain', fn);
  }

  end(trailers: readonly string[] | null): void {
    if (!this.#live()) return;
    this.#ended = true;
    if (this.#chunked) {
      let last = '0\r\n';
      if (trailers !== null)
        for (let i = 0; i + 1 < trailers.length; i += 2) last += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      this.#conn.socket.write(`${last}\r\n`, 'latin1');
    }
    this.#conn.requestSent(this.#ex);
  }
}

/** One upstream connection with its parser; listeners are attached once, for its life. */
class UpstreamConnection {
  readonly socket: Duplex;
  readonly upstream: string;
  readonly key: string;
  readonly #pool: HttpPool;
  readonly #parser: NativeParser;
  exchange: Exchange | null = null;
  #keepAlive = false;
  #informational = false;
  #headers: string[] = [];
  #dead = false;
  #executing = false;
  /** The handle the parser reads from in C++ (no 'data' events), or null. */
  readonly #handle: StreamHandle | null;
  /** A plain TCP socket (its writes may be offloaded). */
  #plain = false;

  /** Moves this socket's writes to the addon's reactor thread (a plain TCP socket with nothing queued). */
  offload(): void {
    if (this.#plain) offloadWrites(this.socket as net.Socket);
  }
  readonly #resume = (): void => {
    if (this.#handle !== null) this.#handle.readStart();
    else this.socket.resume();
  };

  constructor(pool: HttpPool, key: string, socket: Duplex, remote: SocketAddr) {
    this.#pool = pool;
    this.key = key;
    this.socket = socket;
    this.upstream = formatHostPort(remote.host, remote.port);
    const p = new HTTPParser();
    p.initialize(HTTPParser.RESPONSE, {}, http.maxHeaderSize, HTTPParser.kLenientNone);
    p[HTTPParser.kOnHeaders] = (headers: string[]) => {
      if (this.exchange !== null) this.exchange.gotBytes = true;
      for (const h of headers) this.#headers.push(h);
    };
    p[HTTPParser.kOnHeadersComplete] = this.#onHeadersComplete;
    p[HTTPParser.kOnBody] = this.#onBody;
    p[HTTPParser.kOnMessageComplete] = this.#onMessageComplete;
    this.#parser = p;
    // Like Node's HTTP server: a plain TCP socket is read by the parser itself, in C++, so a
    // response costs no Buffer, stream push or 'data' event in JS. Other streams (TLS, a hook's
    // `tcpConnectOverride`) are fed through 'data'.
    const plain = (socket as { encrypted?: boolean }).encrypted !== true;
    const handle = plain ? ((socket as { _handle?: StreamHandle | null })._handle ?? null) : null;
    if (handle !== null && handle.isStreamBase === true && handle._consumed !== true) {
      handle._consumed = true;
      p.consume(handle);
      p[HTTPParser.kOnExecute] = this.#onExecute;
      this.#handle = handle;
      this.#executing = true; // callbacks run inside reads: the parser is closed on 'close'
    } else {
      this.#handle = null;
      socket.on('data', this.#onData);
    }
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    // Request heads are written from the JS thread: an offloaded write costs a cross-thread
    // wake-up, more than the write itself for a small head. A large request body moves the
    // socket's writes to the addon's reactor thread (`ConnectionBodyOut`).
    this.#plain = this.#handle !== null;
    const s = socket as Partial<net.Socket>;
    if (typeof s.setTimeout === 'function') {
      s.setTimeout(pool.idleTimeout);
      socket.on('timeout', this.#onTimeout);
    }
  }

  /** Sends `ex` on this connection: the head at once, then its body (if any) as it comes. */
  send(ex: Exchange): void {
    this.exchange = ex;
    this.#keepAlive = false;
    writeDirect(this.socket as net.Socket, ex.head, 'latin1');
    if (ex.body === null) this.requestSent(ex);
    else ex.body.start(new ConnectionBodyOut(this, ex, ex.body.chunked));
  }

  /** The request went out whole: its response head must now come within `egress.response_timeout`. */
  requestSent(ex: Exchange): void {
    ex.sent = true;
    const limit = this.#pool.responseTimeout;
    if (limit <= 0 || ex.responded) return;
    clearTimeout(ex.timer);
    ex.timer = setTimeout(() => {
      if (this.exchange !== ex || ex.responded) return;
      ex.reused = false; // not retried: the upstream is slow, not gone
      this.#fail(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
    }, limit);
  }

  readonly #onData = (data: Buffer): void => {
    const ex = this.exchange;
    if (ex === null) {
      this.#fail(new Error('upstream sent bytes without a request'));
      return;
    }
    ex.gotBytes = true;
    this.#executing = true;
    const r = this.#parser.execute(data);
    this.#executing = false;
    if (this.#dead) this.#parser.close();
    this.#onExecute(r);
  };

  /**
   * After the parser consumed a read (called by the parser in consume mode, by `#onData`
   * otherwise): errors, and the held body piece. Body pieces of one read are held back by one,
   * so a small response goes out in one write with its head (`onEnd(last)`); what is still held
   * when the read is parsed goes out now.
   */
  readonly #onExecute = (ret: number | Error): void => {
    if (ret instanceof Error) {
      this.#fail(ret);
      return;
    }
    const cur = this.exchange;
    if (cur !== null && cur.pending !== null) {
      const chunk = cur.pending;
      cur.pending = null;
      if (!cur.sink.onBody(chunk, this.#resume)) this.#pause();
    }
  };

  #pause(): void {
    if (this.#handle !== null) this.#handle.readStop();
    else this.socket.pause();
  }

  readonly #onHeadersComplete = (
    _major: number,
    _minor: number,
    headers: string[] | undefined,
    _method: unknown,
    _url: unknown,
    status: number,
    statusText: string,
    _upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    const ex = this.exchange;
    let raw = headers ?? [];
    if (this.#headers.length > 0) {
      raw = this.#headers.concat(raw);
      this.#headers = [];
    }
    if (ex === null) {
      this.#fail(new Error('upstream sent a response without a request'));
      return 0;
    }
    ex.gotBytes = true;
    if (status < 200) {
      if (status === 101) {
        this.#fail(new Error('upstream switched protocols without being asked'));
        return 0;
      }
      this.#informational = true; // the final response follows
      ex.sink.onInformational(status, raw);
      return 0;
    }
    this.#keepAlive = keepAlive;
    ex.responded = true;
    clearTimeout(ex.timer);
    ex.sink.onHead(status, statusText, raw);
    return ex.isHead ? 1 : 0;
  };

  readonly #onBody = (chunk: Buffer): void => {
    const ex = this.exchange;
    if (ex === null) return;
    const prev = ex.pending;
    ex.pending = chunk;
    if (prev !== null && !ex.sink.onBody(prev, this.#resume)) this.#pause();
  };

  readonly #onMessageComplete = (): void => {
    if (this.#informational) {
      this.#informational = false;
      return;
    }
    const ex = this.exchange;
    if (ex === null) return;
    this.exchange = null;
    const last = ex.pending;
    ex.pending = null;
    // Trailers of a chunked body arrive as fields after the head.
    let trailers: string[] | null = null;
    if (this.#headers.length > 0) {
      trailers = this.#headers;
      this.#headers = [];
    }
    // A response that ended before the request body did (a 413, say) leaves the connection
    // mid-request: it cannot carry another.
    if (this.#keepAlive && !this.#dead && ex.sent) this.#pool.release(this);
    else this.destroy();
    ex.sink.onEnd(last, trailers);
  };

  readonly #onEnd = (): void => {
    // A body delimited by the close ends here; anything else in flight failed.
    if (this.exchange !== null) {
      const consumed = this.#handle !== null;
      this.#executing = true;
      const r = this.#parser.finish();
      this.#executing = consumed;
      if (this.#dead && !consumed) this.#parser.close();
      if (r instanceof Error) this.#fail(r);
    }
    this.#fail(new Error('upstream closed the connection'));
  };

  readonly #onError = (e: Error): void => {
    this.#fail(e);
  };

  readonly #onClose = (): void => {
    if (this.#handle !== null) {
      this.#parser.unconsume();
      this.#parser.close();
    }
    this.#fail(new Error('upstream closed the connection'));
  };

  readonly #onTimeout = (): void => {
    if (this.exchange === null) {
      this.destroy(); // idle past pool_idle_timeout
      return;
    }
    // A long exchange (reads in C++ do not touch the timer): arm it again for when it is idle.
    (this.socket as net.Socket).setTimeout(this.#pool.idleTimeout);
  };

  /** Fails the exchange in flight (if any) and destroys the connection. */
  #fail(e: Error): void {
    const ex = this.exchange;
    this.exchange = null;
    if (ex !== null) clearTimeout(ex.timer);
    this.destroy();
    if (ex === null) return;
    if (ex.aborted) return;
    if (ex.reused && ex.retriable && !ex.gotBytes) {
      this.#pool.retry(ex);
      return;
    }
    ex.sink.onError(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'), ex.responded);
  }

  /** Closes the connection (idempotent); an exchange in flight is dropped without a callback. */
  destroy(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#pool.forget(this);
    this.socket.destroy();
    // The native parser must not be freed under its own callbacks: then after `execute`.
    if (!this.#executing) this.#parser.close();
  }

  get dead(): boolean {
    return this.#dead;
  }
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
  #closed = false;

  constructor(rt: Runtime) {
    this.#rt = rt;
    this.#maxIdle = Math.max(1, rt.settings.egress.pool_max_idle);
    this.idleTimeout = rt.settings.egress.pool_idle_timeout;
    this.responseTimeout = rt.settings.egress.response_timeout;
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
    for (const list of [...this.#idle.values()]) for (const c of [...list]) c.destroy();
    this.#idle.clear();
  }
}
