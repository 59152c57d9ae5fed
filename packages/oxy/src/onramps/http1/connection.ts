/**
 * One client connection of the HTTP/1.1 on-ramp (`lean.ts` says what it serves and in which
 * order): parsing with llhttp (`request-parser.ts`), the queue of pipelined requests
 * (`request.ts`), the dispatch to CONNECT, `Upgrade` and the exchange engine, and the response
 * framed onto the stream (`socket-response.ts`).
 *
 * On a plain TCP socket, the parser reads the socket's handle itself once HTTP/2 is ruled out
 * (no `'data'` events: `RequestParser.consume`); pausing then stops the handle's reads. It gives
 * the socket back (unconsumed, reading through `'data'`) whenever the connection leaves this
 * on-ramp or the parser stops (CONNECT, Upgrade, bad input), so whoever takes the socket over
 * reads it as usual.
 *
 * Ordering rules: one request served at a time, responses in order; the stream is paused once a
 * head is queued behind the one served; bad input is answered after the responses before it.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { IngressConnection } from '../../context/state.ts';
import { acknowledgeAtOnce } from '../../endpoints.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { ExchangeResponse, ForwardInput, ForwardRun } from '../../flows/http/exchange.ts';
import { forwardRequest } from '../../flows/http/exchange.ts';
import {
  type AbsoluteTarget,
  parseAbsoluteTarget,
  parseAuthority,
  rawToHeaders,
} from '../../flows/http/headers.ts';
import { serveUpgrade, writeRawResponse } from '../../flows/http/upgrade.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { serveConnect } from '../../tunnels/connect.ts';
import { classifyPreface } from '../http2/preface.ts';
import {
  BUSY,
  closeSoon,
  HEAD,
  type Http1StreamOptions,
  IDLE,
  kLean,
  type LeanSocket,
  onSocketClose,
  onSocketData,
  onSocketEnd,
  type Ramp,
  SILENT,
  setUnread,
} from './connection-socket.ts';
import { describe, H1Request } from './request.ts';
import {
  type ParsedHead,
  READ_BODY,
  RequestParser,
  STOP_AFTER_HEAD,
  type StreamHandle,
} from './request-parser.ts';
import {
  answerClientError,
  answerHeadProblem,
  Http1ConnectExchange,
  type Http1RequestHead,
  headProblem,
  upgradeHandler,
} from './server.ts';
import { SocketResponse } from './socket-response.ts';

const EMPTY = Buffer.alloc(0);

function onlyEmptyLines(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 13 && b[i] !== 10) return false;
  return true;
}

/** One client connection while this on-ramp owns it. */
export class LeanConnection implements ExchangeResponse {
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
  /** This request's ACK went at once (`#ackWaiting`). */
  #acked = false;
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

  /**
   * Lets the parser read the socket's handle itself when it can: a plain TCP socket (not TLS, not
   * another Duplex), HTTP/2 ruled out, nothing held or buffered, the parser not stopped.
   */
  consumeIfPlain(): void {
    const s = this.socket as LeanSocket & { encrypted?: boolean; _handle?: StreamHandle | null };
    if (this.#sniff || this.#stopped || this.#parseError !== null || this.#held !== null) return;
    if (s.encrypted === true || s.readableLength > 0 || s[kLean] !== this) return;
    const h = s._handle;
    if (h == null || h.isStreamBase !== true || h._consumed === true) return;
    if (this.#parser === null) this.#parser = new RequestParser(this.#events, this.ramp.maxHeaderSize);
    this.#parser.consume(h);
    // Paused through the stream before: the handle's reads are what pause now.
    if (this.#readPaused) h.readStop();
  }

  data(chunk: Buffer): void {
    if (this.#sniff) {
      const bytes = this.#held === null ? chunk : Buffer.concat([...this.#held, chunk]);
      const verdict = classifyPreface(bytes);
      if (verdict === undefined) {
        this.#held = [bytes];
        this.#waitingForHead();
        this.#ackWaiting();
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
      this.#execute(chunk);
      this.consumeIfPlain();
      return;
    }
    if (this.#stopped || this.#parseError !== null) {
      this.#hold(chunk);
      return;
    }
    this.#execute(chunk);
    // A socket handed over with bytes pushed back (`adopt.ts`): read by the parser once they are in.
    if (this.#parser !== null && this.#parser.handle === null) this.consumeIfPlain();
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
    this.#afterExecute(this.#parser.execute(buf), buf);
  }

  /** After a read was parsed (by `#execute`, or by the parser itself from the handle: `buf` null). */
  #afterExecute(r: number | (Error & { code?: string }), buf: Buffer | null): void {
    if (typeof r !== 'number') {
      this.#badInput(r.code ?? 'HPE_INVALID');
      return;
    }
    if (this.#stopped) {
      // The socket reads through 'data' again: what follows the head is held for its taker.
      const b = buf ?? this.#parser?.currentBuffer() ?? EMPTY;
      this.#stopConsuming();
      if (r < b.length) this.#hold(b.subarray(r));
    }
    if (this.#active === null && this.#queue.length === 0 && !this.#stopped) {
      // A read that completed no head: a copy of it, when the parser read it itself.
      if (buf === null) buf = this.#parser?.currentBuffer() ?? EMPTY;
      // Empty lines before a request line are ignored (RFC 9112 §2.2), as llhttp does: they do
      // not start a head, so an idle connection stays idle rather than getting a 408.
      if (this.phase === HEAD || !onlyEmptyLines(buf)) {
        this.#waitingForHead();
        this.#ackWaiting();
      }
      return;
    }
    this.#next();
    if (this.#parser?.inBody === true && !this.#stopped) this.#ackWaiting();
  }

  /**
   * After a read that left a request incomplete (its head cut, or its body still to come), the
   * client's ACK goes at once, once per request. With `tcp_smart_accept` the kernel holds it for
   * the answer, and the answer waits on these bytes: a client using Nagle's algorithm would hold
   * its next write 40 ms for that ACK. A request whose head came whole with its body costs nothing.
   */
  #ackWaiting(): void {
    if (this.#acked) return;
    this.#acked = true;
    acknowledgeAtOnce(this.socket);
  }

  /**
   * The parser stops reading the handle (if it did); reads stopped by a pause start again,
   * and the socket (paused as a stream too) buffers them for whoever reads it next.
   */
  #stopConsuming(): void {
    const p = this.#parser;
    const h = p?.handle ?? null;
    if (p === null || h === null) return;
    p.unconsume();
    if (this.#readPaused) h.readStart();
  }

  /** llhttp refused the bytes: the body under way fails, and the client gets 400 (431, …) in turn. */
  #badInput(code: string): void {
    this.#stopConsuming();
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
    executed: (ret: number | (Error & { code?: string })): void => {
      this.#afterExecute(ret, null);
    },
  };

  pauseReading(): void {
    if (this.#readPaused) return;
    this.#readPaused = true;
    this.socket.pause();
    this.#parser?.handle?.readStop();
  }

  resumeReading(): void {
    if (!this.#readPaused || this.socket[kLean] === undefined) return;
    // Another head is queued behind the one served: it waits for its turn.
    if (this.#queue.length > 1 && this.#parsing === null) return;
    this.#unpause();
  }

  #unpause(): void {
    this.#readPaused = false;
    this.socket.resume();
    this.#parser?.handle?.readStart();
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
        '400 a forward proxy needs an absolute-form http:// or https:// target or CONNECT\n',
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
      const addr = origin.addr ?? parseAuthority(origin.authority, origin.scheme === 'https' ? 443 : 80);
      if (addr === null) return null;
      const t = { scheme: origin.scheme, authority: origin.authority, addr, path: url };
      return origin.serverName === undefined ? t : { ...t, serverName: origin.serverName };
    }
    // `https://` targets go to the origin over verified TLS (the pool's `connectTls`).
    const target = parseAbsoluteTarget(url);
    return target !== null && (target.scheme === 'http' || target.scheme === 'https') ? target : null;
  }

  #serve(req: H1Request, target: AbsoluteTarget): void {
    this.#active = req;
    this.#closeAfterThis = false;
    this.phase = BUSY;
    this.socket._httpMessage = this; // a drain sees a response under way
    const head = req.head;
    this.#out.reset(head.method, head.version);
    const input: { -readonly [K in keyof ForwardInput]: ForwardInput[K] } = {
      method: head.method,
      target,
      rawHeaders: head.rawHeaders,
      body: req.hasBody ? req : null,
      expectContinue: req.expectContinue,
    };
    // Set only when given (no spread of a throw-away object per request).
    const { kind, parent } = this.#options;
    if (kind !== undefined) input.kind = kind;
    if (parent !== undefined) input.parent = parent;
    const run = forwardRequest(this.ramp.rt, this.ramp.h1.pool, this.conn, input, this);
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
    this.#stopConsuming();
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
    this.#acked = false;
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
    else if (this.#readPaused && this.#parsing === null) this.#unpause();
  }

  /** Serves what was queued while the last response was under way. */
  continueQueued(): void {
    if (this.#active !== null || this.socket[kLean] === undefined) return;
    this.#next();
    if (this.#active === null && this.#queue.length === 0 && this.#readPaused && this.#parsing === null)
      this.#unpause();
    else if (this.#queue.length <= 1) this.resumeReading();
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
