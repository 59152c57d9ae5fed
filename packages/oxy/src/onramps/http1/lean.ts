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
import type { RequestKind } from '../../context/contexts.ts';
import type { EndpointState, IngressConnection, RequestState } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { BodySink, BodySource, ExchangeResponse, ForwardRun } from '../../flows/http/exchange.ts';
import { forwardRequest } from '../../flows/http/exchange.ts';
import {
  type AbsoluteTarget,
  parseAbsoluteTarget,
  parseAuthority,
  rawToHeaders,
} from '../../flows/http/headers.ts';
import { serveUpgrade, writeRawResponse } from '../../flows/http/upgrade.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { serveConnect } from '../../tunnels/connect.ts';
import { classifyPreface } from '../http2/preface.ts';
import type { SocketOnRamp } from '../ingress.ts';
import { type ParsedHead, READ_BODY, RequestParser, STOP_AFTER_HEAD } from './request-parser.ts';
import {
  answerClientError,
  answerHeadProblem,
  Http1ConnectExchange,
  type Http1OnRamp,
  type Http1RequestHead,
  headProblem,
  upgradeHandler,
} from './server.ts';
import { SocketResponse } from './socket-response.ts';

/** How {@link serveHttp1Stream} serves a stream. */
export interface Http1StreamOptions {
  /** The audit record's request kind of the requests on it (e.g. `intercepted`); default `forward`. */
  readonly kind?: RequestKind;
  /** The request the stream came in on (the tunnel of an intercepted or tunnelled stream). */
  readonly parent?: RequestState;
  /** Origin-form requests (`GET /path`) go to this origin; without it they are refused (400). */
  readonly origin?: { readonly scheme: 'http' | 'https'; readonly authority: string };
}

function onlyEmptyLines(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 13 && b[i] !== 10) return false;
  return true;
}

// What a connection waits for, for the timeout sweep.
/** A request is being served, or the connection left this on-ramp. */
const BUSY = 0;
/** Nothing received yet. */
const SILENT = 1;
/** Between keep-alive requests. */
const IDLE = 2;
/** Part of a head received. */
const HEAD = 3;

const kLean = Symbol('oxy.lean');
type LeanSocket = Duplex & { [kLean]?: LeanConnection; _httpMessage?: unknown };

function onSocketData(this: LeanSocket, chunk: Buffer): void {
  this[kLean]?.data(chunk);
}
function onSocketEnd(this: LeanSocket): void {
  this[kLean]?.clientEnded();
}
function onSocketClose(this: LeanSocket): void {
  this[kLean]?.closed();
}
/** Leaves `socket` as `node:http` leaves an upgraded one: not flowing, the next reader starts it. */
function setUnread(socket: Duplex): void {
  (socket as { readableFlowing: boolean | null }).readableFlowing = null;
}
/** Closes `s` once what was written is flushed, even if the client keeps its side open. */
function closeSoon(s: Duplex): void {
  const sock = s as Partial<net.Socket>;
  if (typeof sock.destroySoon === 'function') {
    sock.destroySoon();
    return;
  }
  s.once('finish', () => s.destroy());
  s.end();
}

/** Errors end in 'close'; the exchange or tunnel reports what it needs. */
function onSocketError(): void {}

/** The endpoint-wide part: settings, the pool, the sweep, the on-ramps to hand over to. */
interface Ramp {
  readonly rt: Runtime;
  readonly endpoint: EndpointState;
  readonly h1: Http1OnRamp;
  readonly http2: ((socket: net.Socket, conn: IngressConnection) => void) | null;
  readonly live: Set<LeanConnection>;
  readonly maxHeaderSize: number;
  readonly headerTimeout: number;
  readonly idleTimeout: number;
}

/** One request on a connection: its head, and its body as the engine's {@link BodySource}. */
class H1Request implements BodySource {
  readonly head: ParsedHead;
  readonly #conn: LeanConnection;
  /** `Content-Length`, or -1 for chunked. */
  length = -1;
  hasBody = false;
  expectContinue = false;
  problem: [number, string] | null = null;
  /** The whole message was parsed (its body, if any, included). */
  complete = false;
  #chunks: Buffer[] = [];
  #trailers: string[] | null = null;
  #sink: BodySink | null = null;
  #paused = false;
  #endSent = false;
  #stopped = false;
  readonly #resume = (): void => {
    this.#paused = false;
    this.#flush();
    if (!this.#paused) this.#conn.resumeReading();
  };

  constructor(head: ParsedHead, conn: LeanConnection) {
    this.head = head;
    this.#conn = conn;
  }

  /** True when the body was not all read and handed on (the connection cannot carry another request). */
  get unread(): boolean {
    return this.#stopped || !this.complete;
  }

  push(chunk: Buffer): void {
    if (this.#stopped) return;
    this.#chunks.push(chunk);
    if (this.#sink !== null && !this.#paused) this.#flush();
  }

  finish(trailers: string[] | null): void {
    this.complete = true;
    this.#trailers = trailers;
    if (this.#sink !== null && !this.#paused) this.#flush();
  }

  fail(e: unknown): void {
    const sink = this.#sink;
    this.stop();
    sink?.error(e);
  }

  start(sink: BodySink): void {
    if (this.#stopped) return;
    this.#sink = sink;
    this.#flush();
  }

  stop(): void {
    this.#stopped = true;
    this.#sink = null;
    this.#chunks = [];
  }

  #flush(): void {
    const sink = this.#sink;
    if (sink === null) return;
    while (this.#chunks.length > 0) {
      const c = this.#chunks.shift() as Buffer;
      if (!sink.data(c, this.#resume)) {
        if (this.#sink === null) return;
        this.#paused = true;
        this.#conn.pauseReading();
        return;
      }
      if (this.#sink === null) return;
    }
    if (this.complete && !this.#endSent) {
      this.#endSent = true;
      sink.end(this.#trailers);
    }
  }
}

/** What a head says about its body and `Expect` (llhttp validated the framing fields). */
function describe(req: H1Request): void {
  const raw = req.head.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const n = name.length;
    if (n !== 6 && n !== 14 && n !== 17) continue;
    const lower = name.toLowerCase();
    if (lower === 'transfer-encoding') {
      req.hasBody = true;
      req.length = -1;
    } else if (lower === 'content-length') {
      const len = Number(raw[i + 1]);
      if (len > 0 && !req.hasBody) {
        req.hasBody = true;
        req.length = len;
      }
    } else if (lower === 'expect') {
      if ((raw[i + 1] as string).trim().toLowerCase() === '100-continue' && req.head.version === 11)
        req.expectContinue = true;
      else req.problem = [417, 'expectation_failed'];
    }
  }
  if (!req.hasBody) req.expectContinue = false;
}

/** One client connection while this on-ramp owns it. */
class LeanConnection implements ExchangeResponse {
  readonly socket: LeanSocket;
  readonly conn: IngressConnection;
  readonly ramp: Ramp;
  readonly #options: Http1StreamOptions;
  phase: number = SILENT;
  since = performance.now();
  #parser: RequestParser | null = null;
  /** Requests parsed and not yet answered, in order; the first is served when `#active`. */
  readonly #queue: H1Request[] = [];
  /** The request whose body the parser is reading. */
  #parsing: H1Request | null = null;
  #active: H1Request | null = null;
  #run: ForwardRun | null = null;
  /** Bytes not given to the parser: after a head it stopped at, or before HTTP/2 was ruled out. */
  #held: Buffer[] | null = null;
  /** The parser stopped after a CONNECT, Upgrade or refused head: what follows is held raw. */
  #stopped = false;
  /** llhttp's error code for bad input after requests still to be answered. */
  #parseError: string | null = null;
  #sniff: boolean;
  /** The client sent FIN: close once the responses under way are written. */
  #clientEnded = false;
  /** The request served now leaves its body unread: the connection closes after its response. */
  #closeAfterThis = false;
  #readPaused = false;
  readonly #out: SocketResponse;

  constructor(
    socket: Duplex,
    conn: IngressConnection,
    ramp: Ramp,
    options: Http1StreamOptions,
    sniff: boolean,
  ) {
    this.socket = socket;
    this.conn = conn;
    this.ramp = ramp;
    this.#options = options;
    this.#sniff = sniff;
    this.#out = new SocketResponse(socket);
  }

  data(chunk: Buffer): void {
    if (this.#sniff) {
      const bytes = this.#held === null ? chunk : Buffer.concat([...this.#held, chunk]);
      const verdict = classifyPreface(bytes);
      if (verdict === undefined) {
        this.#held = [bytes];
        this.#waitingForHead();
        return;
      }
      this.#sniff = false;
      this.#held = null;
      if (verdict === 'h2') {
        this.#leave();
        setUnread(this.socket);
        this.socket.unshift(bytes);
        // Not from inside the socket's read callback: the session takes over its handle.
        process.nextTick(startHttp2, this);
        return;
      }
      chunk = bytes;
    }
    if (this.#stopped || this.#parseError !== null) {
      this.#hold(chunk);
      return;
    }
    this.#execute(chunk);
  }

  #hold(chunk: Buffer): void {
    if (this.#held === null) this.#held = [];
    this.#held.push(chunk);
    // What follows a CONNECT or Upgrade head waits for its tunnel: no more than a few heads' worth.
    let n = 0;
    for (const b of this.#held) n += b.length;
    if (n > this.ramp.maxHeaderSize * 4) this.pauseReading();
  }

  #waitingForHead(): void {
    if (this.phase !== HEAD) {
      this.phase = HEAD;
      this.since = performance.now();
    }
  }

  #execute(buf: Buffer): void {
    if (this.#parser === null) this.#parser = new RequestParser(this.#events, this.ramp.maxHeaderSize);
    const r = this.#parser.execute(buf);
    if (typeof r !== 'number') {
      this.#badInput(r.code ?? 'HPE_INVALID');
      return;
    }
    if (this.#stopped && r < buf.length) this.#hold(buf.subarray(r));
    if (this.#active === null && this.#queue.length === 0 && !this.#stopped) {
      // Empty lines before a request line are ignored (RFC 9112 §2.2), as llhttp does: they do
      // not start a head, so an idle connection stays idle rather than getting a 408.
      if (this.phase === HEAD || !onlyEmptyLines(buf)) this.#waitingForHead();
      return;
    }
    this.#next();
  }

  /** llhttp refused the bytes: the body under way fails, and the client gets 400 (431, …) in turn. */
  #badInput(code: string): void {
    this.#parser?.release();
    this.#parser = null;
    this.#parseError = code;
    const parsing = this.#parsing;
    this.#parsing = null;
    if (parsing !== null && parsing === this.#active) {
      // A malformed body of the request being served: that exchange fails (400 while its
      // response has not started, else cut), and the connection closes after it.
      this.#queue.length = 1;
      parsing.fail(new OxyError(OXY_ERR.BAD_REQUEST, 'malformed request body', { source: 'downstream' }));
      return;
    }
    if (parsing !== null) this.#queue.pop(); // its head was read, its body is not: not served
    this.#next();
  }

  /** The parser's receiver. */
  readonly #events = {
    head: (head: ParsedHead): number => {
      const req = new H1Request(head, this);
      this.#queue.push(req);
      this.phase = BUSY;
      const problem = headProblem(Math.floor(head.version / 10), head.version % 10, head.rawHeaders);
      if (problem !== null) req.problem = problem;
      else describe(req);
      if (req.problem !== null || head.method === 'CONNECT' || head.upgrade) {
        this.#stopped = true;
        return STOP_AFTER_HEAD;
      }
      // One request served and one more read ahead: the rest waits in the socket.
      if (this.#queue.length > 1) this.pauseReading();
      if (req.hasBody) this.#parsing = req;
      else req.complete = true;
      return READ_BODY;
    },
    body: (chunk: Buffer): void => {
      this.#parsing?.push(chunk);
    },
    end: (trailers: string[] | null): void => {
      const req = this.#parsing;
      this.#parsing = null;
      req?.finish(trailers);
    },
  };

  pauseReading(): void {
    if (this.#readPaused) return;
    this.#readPaused = true;
    this.socket.pause();
  }

  resumeReading(): void {
    if (!this.#readPaused || this.socket[kLean] === undefined) return;
    // Another head is queued behind the one served: it waits for its turn.
    if (this.#queue.length > 1 && this.#parsing === null) return;
    this.#readPaused = false;
    this.socket.resume();
  }

  /** Serves the next queued request if none is under way. */
  #next(): void {
    if (this.#active !== null || this.socket[kLean] === undefined) return;
    const req = this.#queue[0];
    if (req === undefined) {
      const code = this.#parseError;
      if (code !== null) {
        this.#leave();
        answerClientError(this.ramp.endpoint, this.conn, this.socket, code);
      }
      return;
    }
    if (req.problem !== null) {
      this.#leave();
      answerHeadProblem(this.ramp.endpoint, this.conn, this.socket, req.problem);
      return;
    }
    if (req.head.method === 'CONNECT') {
      this.#connect(req);
      return;
    }
    if (req.head.upgrade) {
      this.#upgrade(req);
      return;
    }
    const target = this.#targetOf(req.head.url);
    if (target === null) {
      this.#leave();
      writeRawResponse(
        this.socket,
        400,
        '400 a forward proxy needs an absolute-form http:// target or CONNECT\n',
        ['Content-Type', 'text/plain'],
      );
      return;
    }
    this.#serve(req, target);
  }

  #targetOf(url: string): AbsoluteTarget | null {
    if (url.charCodeAt(0) === 47 /* / */) {
      const origin = this.#options.origin;
      if (origin === undefined) return null;
      const addr = parseAuthority(origin.authority, origin.scheme === 'https' ? 443 : 80);
      return addr === null ? null : { scheme: origin.scheme, authority: origin.authority, addr, path: url };
    }
    const target = parseAbsoluteTarget(url);
    return target !== null && target.scheme === 'http' ? target : null;
  }

  #serve(req: H1Request, target: AbsoluteTarget): void {
    this.#active = req;
    this.#closeAfterThis = false;
    this.phase = BUSY;
    this.socket._httpMessage = this; // a drain sees a response under way
    const head = req.head;
    this.#out.reset(head.method, head.version);
    const run = forwardRequest(
      this.ramp.rt,
      this.ramp.h1.pool,
      this.conn,
      {
        method: head.method,
        target,
        rawHeaders: head.rawHeaders,
        body: req.hasBody ? req : null,
        expectContinue: req.expectContinue,
        ...(this.#options.kind === undefined ? {} : { kind: this.#options.kind }),
      },
      this,
    );
    if (this.#active === req) this.#run = run;
  }

  #connect(req: H1Request): void {
    const url = req.head.url;
    const target = parseAuthority(url);
    const early = this.#takeHeld();
    this.#leave();
    const socket = this.socket;
    if (target === null) {
      writeRawResponse(socket, 400, '400 CONNECT needs a host:port target\n');
      return;
    }
    // As node:http leaves a CONNECT socket: nobody reading, the tunnel's reader starts it.
    setUnread(socket);
    const ex = new Http1ConnectExchange(url, req.head.rawHeaders, socket, early);
    void serveConnect(this.ramp.rt, this.conn, ex, target);
  }

  #upgrade(req: H1Request): void {
    const early = this.#takeHeld() ?? Buffer.alloc(0);
    this.#leave();
    const socket = this.socket;
    setUnread(socket);
    const h = req.head;
    const head: Http1RequestHead = {
      method: h.method,
      url: h.url,
      rawHeaders: h.rawHeaders,
      headers: rawToHeaders(h.rawHeaders),
      httpVersion: `${Math.floor(h.version / 10)}.${h.version % 10}`,
    };
    const upgrade = head.headers.upgrade;
    const own = upgradeHandler(
      this.ramp.h1.upgradeHandlers,
      Array.isArray(upgrade) ? upgrade.join(',') : upgrade,
    );
    if (own !== undefined) {
      own(head, socket, early, this.conn);
      return;
    }
    const target = parseAbsoluteTarget(h.url);
    if (target === null || target.scheme !== 'http') {
      writeRawResponse(socket, 400, '400 Upgrade needs an absolute-form http:// target\n');
      return;
    }
    void serveUpgrade(this.ramp.rt, this.conn, head, socket, early, target);
  }

  #takeHeld(): Buffer | null {
    const held = this.#held;
    this.#held = null;
    if (held === null || held.length === 0) return null;
    return held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held);
  }

  /** This on-ramp lets go of the connection (tunnel, upgrade, error, or closed). */
  #leave(): void {
    const s = this.socket;
    s.removeListener('data', onSocketData);
    s.removeListener('end', onSocketEnd);
    s.removeListener('close', onSocketClose);
    s[kLean] = undefined;
    this.phase = BUSY;
    this.ramp.live.delete(this);
    this.#parser?.release();
    this.#parser = null;
    if (this.#readPaused) {
      this.#readPaused = false;
      s.resume();
    }
  }

  // ExchangeResponse: the engine's response, framed onto the stream by `#out`.

  head(status: number, statusText: string, rawHeaders: readonly string[]): void {
    this.#out.head(status, statusText, rawHeaders, this.#closeAfter());
  }

  /** The response in flight is the connection's last: the client asked, half-closed, left its body, or we drain. */
  #closeAfter(): boolean {
    const req = this.#active;
    return (
      req === null ||
      !req.head.keepAlive ||
      this.#clientEnded ||
      this.#closeAfterThis ||
      this.ramp.rt.draining
    );
  }

  body(chunk: Buffer, resume: () => void): boolean {
    return this.#out.body(chunk, resume);
  }

  end(last: Buffer | null, trailers: readonly string[] | null): void {
    this.#out.end(last, trailers);
    this.#exchangeDone();
  }

  fail(status: number, body: string): void {
    this.#out.fail(status, body, this.#closeAfter());
    this.#exchangeDone();
  }

  answer(status: number, rawHeaders: readonly string[], body: string | Uint8Array): void {
    this.#out.answer(status, rawHeaders, body, this.#closeAfter());
    this.#exchangeDone();
  }

  informational(status: number, rawHeaders: readonly string[]): void {
    // A 100 only to a client waiting for it; other 1xx to HTTP/1.1 clients (1.0 has none).
    const req = this.#active;
    if (req === null || req.head.version !== 11 || (status === 100 && !req.expectContinue)) return;
    this.#out.informational(status, rawHeaders);
  }

  bodyUnread(): void {
    this.#closeAfterThis = true;
  }

  #exchangeDone(): void {
    const req = this.#active;
    this.#active = null;
    this.#run = null;
    this.#queue.shift();
    const s = this.socket;
    s._httpMessage = null;
    if (s.destroyed || s[kLean] === undefined) return;
    if (this.#out.closeAfter || this.#clientEnded || this.#closeAfterThis || req?.unread === true) {
      this.#leave();
      // As node:http: closed once the response is flushed, even if the client keeps its side
      // open (the socket is half-open, and may be paused with pipelined requests unread).
      closeSoon(s);
      return;
    }
    this.phase = this.#queue.length > 0 ? BUSY : IDLE;
    this.since = performance.now();
    if (this.#queue.length > 0 || this.#parseError !== null) process.nextTick(continueQueued, this);
    else if (this.#readPaused && this.#parsing === null) {
      this.#readPaused = false;
      s.resume();
    }
  }

  /** Serves what was queued while the last response was under way. */
  continueQueued(): void {
    if (this.#active !== null || this.socket[kLean] === undefined) return;
    this.#next();
    if (this.#active === null && this.#queue.length === 0 && this.#readPaused && this.#parsing === null) {
      this.#readPaused = false;
      this.socket.resume();
    } else if (this.#queue.length <= 1) this.resumeReading();
  }

  /**
   * The client sent FIN. Responses under way are written and the connection closed after them
   * (a half-closed client is still reading); a partial head gets a 400, a partial body fails its
   * exchange.
   */
  clientEnded(): void {
    const parsing = this.#parsing;
    if (this.#active !== null || this.#queue.length > 0) {
      this.#clientEnded = true;
      if (parsing !== null) {
        this.#parsing = null;
        parsing.fail(new OxyError(OXY_ERR.BAD_REQUEST, 'request body cut short', { source: 'downstream' }));
      }
      return;
    }
    const partial = this.phase === HEAD;
    this.#leave();
    // A head cut short by the client's FIN is a bad request, answered as node:http answers it.
    if (partial) answerClientError(this.ramp.endpoint, this.conn, this.socket, 'HPE_INVALID_EOF_STATE');
    else this.socket.end();
  }

  closed(): void {
    const run = this.#run;
    this.#run = null;
    this.#active = null;
    this.#queue.length = 0;
    this.#held = null;
    this.#leave();
    run?.clientClosed();
  }

  /** The sweep found this connection past its deadline. */
  expire(): void {
    const { endpoint } = this.ramp;
    const phase = this.phase;
    this.#leave();
    if (phase === IDLE) {
      this.socket.destroy();
      return;
    }
    const bytesRead = (this.socket as Partial<net.Socket>).bytesRead ?? 1;
    if (phase === SILENT || bytesRead === 0) {
      this.conn.closeReason = 'header_timeout';
      ingressMetrics.connections_failed_total({ endpoint: endpoint.name, reason: 'header_timeout' }).inc();
      this.socket.destroy();
      return;
    }
    answerClientError(endpoint, this.conn, this.socket, 'ERR_HTTP_REQUEST_TIMEOUT');
  }
}

function startHttp2(c: LeanConnection): void {
  const h2 = c.ramp.http2;
  if (h2 === null || c.socket.destroyed) c.socket.destroy();
  else inConnectionContext(c.conn, () => h2(c.socket as net.Socket, c.conn));
}

function continueQueued(c: LeanConnection): void {
  c.continueQueued();
}

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
  const ep = httpEndpoint(endpoint.settings);
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
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const c of ramp.live) {
        if (c.phase === BUSY) continue;
        const limit = c.phase === IDLE ? ramp.idleTimeout : ramp.headerTimeout;
        if (limit > 0 && now - c.since >= limit) c.expire();
      }
    },
    sweepInterval(ep.header_read_timeout, ep.idle_timeout),
  ).unref();
  return {
    protocol: 'http/1.1',
    get size() {
      return ramp.live.size;
    },
    close(): void {
      clearInterval(sweep);
      if (ramps.get(endpoint) === ramp) ramps.delete(endpoint);
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      // HTTP/2 prior knowledge is looked for on cleartext sockets only (TLS chose by ALPN).
      const sniff = http2 !== null && (socket as { encrypted?: boolean }).encrypted !== true;
      startConnection(ramp, socket, conn, NO_OPTIONS, sniff);
    },
  };
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
  const ramp = ramps.get(endpoint);
  if (ramp === undefined || ramp.rt !== rt)
    throw new OxyError(OXY_ERR.INVALID_APP, `endpoint ${endpoint.name} has no HTTP/1.1 on-ramp`);
  startConnection(ramp, stream, conn, options, false);
  if (stream.isPaused()) stream.resume();
}
