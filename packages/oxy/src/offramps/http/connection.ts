/**
 * One upstream HTTP/1.1 connection of the pool (`pool.ts`) and the request on it: the head
 * written at once, the body through {@link ConnectionBodyOut} with its framing, the response
 * parsed by llhttp (in C++ from the socket's handle on plain TCP, else from 'data') and handed to
 * the exchange's sink. Listeners are attached once, for the connection's life.
 *
 * Ordering rules: see `pool.ts`; the native parser is never freed under its own callbacks.
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import { offloadWrites, onWriteFailure, writeDirect } from '../../flows/stream/offload.ts';
import type { BodyOut, HttpPool, PendingRequest, RequestBody, ResponseSink, UpstreamTarget } from './pool.ts';

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

/**
 * How long an exchange whose request could not be written whole (the upstream reset) waits for
 * the rest of a response already on its way before it fails. The connection's end normally
 * comes first: a reset connection reads to its end at once.
 */
const WRITE_FAILURE_GRACE_MS = 5000;

/** Methods a request may be sent twice with (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** One request: what was sent, where its response goes, and how far it got. */
export class Exchange implements PendingRequest {
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
    return !this.#ended && this.#conn.exchange === this.#ex && !this.#conn.dead && !this.#conn.writeFailed;
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
export class UpstreamConnection {
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
  /** A write failed (the upstream reset): the request's rest is dropped, the response still read. */
  writeFailed = false;
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
    // Writes go through the addon's writer (`offload.ts`): a request head is written at once on
    // the JS thread, without Node's per-write machinery (a cross-thread hand-over would cost
    // more than the write); large request bodies are written on the reactor thread.
    this.#plain = this.#handle !== null;
    if (this.#plain && offloadWrites(socket as net.Socket))
      onWriteFailure(socket as net.Socket, this.#onWriteFailure);
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
    ex.timer = setTimeout(UpstreamConnection.#headTimeout, limit, this, ex);
  }

  /** No response head within `egress.response_timeout` (a callback with arguments: no closure per request). */
  static #headTimeout(conn: UpstreamConnection, ex: Exchange): void {
    if (conn.exchange !== ex || ex.responded) return;
    ex.reused = false; // not retried: the upstream is slow, not gone
    conn.#fail(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
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
    if (this.#keepAlive && !this.#dead && ex.sent && !this.writeFailed) this.#pool.release(this);
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

  /**
   * A write failed: the upstream reset, typically after answering early and closing without
   * reading the rest of the request body (Python's `http.server` answering 501 to a POST, an
   * origin refusing an upload with 413). That answer may already be in the receive buffer, as
   * curl talking to the origin directly would show it: the rest of the body is dropped and the
   * response read on; the connection's end (or {@link WRITE_FAILURE_GRACE_MS}) fails the
   * exchange if no whole response came. Without an exchange the connection just goes.
   */
  readonly #onWriteFailure = (e: Error): void => {
    if (this.writeFailed || this.#dead) return;
    this.writeFailed = true;
    const ex = this.exchange;
    if (ex === null) {
      this.#fail(e);
      return;
    }
    setTimeout(() => {
      if (this.exchange === ex) this.#fail(e);
    }, WRITE_FAILURE_GRACE_MS).unref();
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
