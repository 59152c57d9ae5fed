/**
 * The lean HTTP/1.1 on-ramp of a cleartext `http` endpoint: the proxy's two hot paths without
 * `node:http`. Each connection gets one object; request heads are parsed by llhttp (Node's own
 * binding, strict, the same parser `node:http` uses, with the same `max_header_size`) and then:
 *
 * - `CONNECT host:port` → the tunnel pipeline at once (no `IncomingMessage`, no server parser
 *   kept: the parser goes back to a free list when the head is read);
 * - an HTTP/1.1 absolute-form `http://` request without a body, when no `handleRequest` or
 *   `handleResponse` hook is installed → the lean forwarding path, whose response is written
 *   straight onto the socket (head and a small body in one write);
 * - anything else (a body, an `Upgrade`, HTTP/1.0, an origin-form target, `Expect`, hooks that
 *   may rewrite the exchange) → the `node:http` on-ramp (`server.ts`) takes the connection over
 *   for the rest of its life: the head is serialised again (llhttp accepted it, so `node:http`
 *   reads it the same) and pushed back with the bytes after it.
 * - The HTTP/2 preface (prior knowledge, when HTTP/2 is on) → the HTTP/2 on-ramp, with the bytes
 *   read so far pushed back.
 *
 * Ordering rules: one request at a time per connection: bytes that arrive while a response is
 * under way (pipelining) are held and parsed once it is done, so responses leave in order. Bad
 * input is answered as `node:http` answers it (400 for a malformed head, 431 over
 * `max_header_size`, 408 when a head takes longer than `header_read_timeout`), and closes the
 * connection. A client that sends nothing within `header_read_timeout` is closed; an idle
 * keep-alive connection after `idle_timeout`. Timeouts are checked by one sweep per endpoint,
 * not a timer per connection.
 */
import type net from 'node:net';
import type { EndpointState, IngressConnection } from '../../context/state.ts';
import { type ExchangeResponse, type ForwardRun, forwardRequest } from '../../flows/http/exchange.ts';
import { type AbsoluteTarget, parseAbsoluteTarget, parseAuthority } from '../../flows/http/headers.ts';
import { writeRawResponse } from '../../flows/http/upgrade.ts';
import type { Runtime } from '../../runtime.ts';
import { httpEndpoint } from '../../settings.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { serveConnect } from '../../tunnels/connect.ts';
import { classifyPreface } from '../http2/preface.ts';
import type { SocketOnRamp } from '../ingress.ts';
import { type HeadSink, type RequestParser, releaseParser, takeParser } from './request-parser.ts';
import {
  answerClientError,
  answerHeadProblem,
  Http1ConnectExchange,
  type Http1OnRamp,
  headProblem,
} from './server.ts';
import { SocketResponse } from './socket-response.ts';

function onlyEmptyLines(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 13 && b[i] !== 10) return false;
  return true;
}

// What a connection waits for, for the timeout sweep.
/** A response is under way, or the connection left this on-ramp. */
const BUSY = 0;
/** Nothing received yet. */
const SILENT = 1;
/** Between keep-alive requests. */
const IDLE = 2;
/** Part of a head received. */
const HEAD = 3;

const kLean = Symbol('oxy.lean');
type LeanSocket = net.Socket & { [kLean]?: LeanConnection; _httpMessage?: unknown };

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
function setUnread(socket: net.Socket): void {
  (socket as { readableFlowing: boolean | null }).readableFlowing = null;
}

/** Errors end in 'close'; the tunnel or forwarding path reports what it needs. */
function onSocketError(): void {}

/** The endpoint-wide part: settings, the sweep, the other on-ramps to hand over to. */
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

/** One client connection while this on-ramp owns it. */
class LeanConnection implements ExchangeResponse, HeadSink {
  readonly socket: LeanSocket;
  readonly conn: IngressConnection;
  readonly ramp: Ramp;
  phase: number = SILENT;
  since = performance.now();
  #parser: RequestParser | null = null;
  /** Bytes received while a response was under way, or before HTTP/2 was ruled out. */
  #held: Buffer[] | null = null;
  #sniff: boolean;
  #run: ForwardRun | null = null;
  #inFlight = false;
  /** The client sent FIN while a response was under way: close once it is written. */
  #clientEnded = false;
  readonly #out: SocketResponse;

  // The head just parsed (set by the parser callbacks).
  ready = false;
  version = 11;
  method = '';
  url = '';
  rawHeaders: string[] = [];
  upgrade = false;
  keepAlive = true;
  partHeaders: string[] = [];
  partUrl = '';

  constructor(socket: net.Socket, conn: IngressConnection, ramp: Ramp) {
    this.socket = socket;
    this.conn = conn;
    this.ramp = ramp;
    this.#sniff = ramp.http2 !== null;
    this.#out = new SocketResponse(socket);
  }

  data(chunk: Buffer): void {
    if (this.#inFlight) {
      this.#hold(chunk);
      return;
    }
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
    this.#execute(chunk);
  }

  #hold(chunk: Buffer): void {
    if (this.#held === null) this.#held = [];
    const held = this.#held;
    held.push(chunk);
    // A client that pipelines more than a few heads' worth waits for the responses first.
    let n = 0;
    for (const b of held) n += b.length;
    if (n > this.ramp.maxHeaderSize * 4) this.socket.pause();
  }

  #waitingForHead(): void {
    if (this.phase !== HEAD) {
      this.phase = HEAD;
      this.since = performance.now();
    }
  }

  #execute(buf: Buffer): void {
    if (this.#parser === null) this.#parser = takeParser(this, this.ramp.maxHeaderSize);
    const p = this.#parser;
    const r = p.execute(buf);
    if (typeof r !== 'number') {
      this.#leave();
      answerClientError(this.ramp.endpoint, this.conn, this.socket, r.code ?? 'HPE_INVALID');
      return;
    }
    if (!this.ready) {
      // Empty lines before a request line are ignored (RFC 9112 §2.2), as llhttp does: they do
      // not start a head, so an idle connection stays idle rather than getting a 408.
      if (this.phase === HEAD || !onlyEmptyLines(buf)) this.#waitingForHead();
      return;
    }
    this.ready = false;
    // Between heads the parser holds no state: give it back (an idle connection holds none).
    this.#parser = null;
    releaseParser(p);
    this.#dispatch(r < buf.length ? buf.subarray(r) : null);
  }

  #dispatch(rest: Buffer | null): void {
    const problem = headProblem(Math.floor(this.version / 10), this.version % 10, this.rawHeaders);
    if (problem !== null) {
      this.#takeHeld(rest);
      this.#leave();
      answerHeadProblem(this.ramp.endpoint, this.conn, this.socket, problem);
      return;
    }
    const method = this.method;
    if (method === 'CONNECT') {
      this.#connect(rest);
      return;
    }
    const target = this.#leanTarget();
    if (target === null) {
      this.#handOver(rest);
      return;
    }
    this.phase = BUSY;
    this.socket._httpMessage = this; // a drain sees a response under way
    if (rest !== null) this.#hold(rest);
    this.#inFlight = true;
    this.#out.reset(method);
    const { rt } = this.ramp;
    const run = forwardRequest(
      rt,
      this.ramp.h1.pool,
      this.conn,
      { method, target, rawHeaders: this.rawHeaders, body: null, expectContinue: false },
      this,
    );
    if (this.#inFlight) this.#run = run;
  }

  /** The target of a request the lean path can forward, or null. */
  #leanTarget(): AbsoluteTarget | null {
    if (this.version !== 11 || this.upgrade || !this.ramp.rt.fast.leanForward) return null;
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      const n = name.length;
      if (n !== 6 && n !== 14 && n !== 17) continue;
      const lower = name.toLowerCase();
      if (lower === 'transfer-encoding' || lower === 'expect') return null;
      if (lower === 'content-length' && raw[i + 1] !== '0') return null;
    }
    const target = parseAbsoluteTarget(this.url);
    return target !== null && target.scheme === 'http' ? target : null;
  }

  #connect(rest: Buffer | null): void {
    const target = parseAuthority(this.url);
    const early = this.#takeHeld(rest);
    this.#leave();
    const socket = this.socket;
    if (target === null) {
      writeRawResponse(socket, 400, '400 CONNECT needs a host:port target\n');
      return;
    }
    // As node:http leaves a CONNECT socket: nobody reading, the tunnel's reader starts it.
    setUnread(socket);
    const ex = new Http1ConnectExchange(this.url, this.rawHeaders, socket, early);
    void serveConnect(this.ramp.rt, this.conn, ex, target);
  }

  /** Gives the connection to the `node:http` on-ramp, starting with the head just parsed. */
  #handOver(rest: Buffer | null): void {
    let head = `${this.method} ${this.url} HTTP/${Math.floor(this.version / 10)}.${this.version % 10}\r\n`;
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    const after = this.#takeHeld(rest);
    const bytes = Buffer.from(`${head}\r\n`, 'latin1');
    this.#leave();
    const socket = this.socket;
    socket.pause();
    socket.unshift(after === null ? bytes : Buffer.concat([bytes, after]));
    // Not from inside the socket's read callback: node:http takes over its handle.
    process.nextTick(startHttp1, this);
  }

  #takeHeld(rest: Buffer | null): Buffer | null {
    const held = this.#held;
    this.#held = null;
    if (held === null) return rest;
    if (rest !== null) held.unshift(rest);
    return held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held);
  }

  /** This on-ramp lets go of the connection (handed over, tunnel, error, or closed). */
  #leave(): void {
    const s = this.socket;
    s.removeListener('data', onSocketData);
    s.removeListener('end', onSocketEnd);
    s.removeListener('close', onSocketClose);
    s[kLean] = undefined;
    this.phase = BUSY;
    this.ramp.live.delete(this);
    if (this.#parser !== null) {
      releaseParser(this.#parser);
      this.#parser = null;
    }
  }

  // ExchangeResponse: the forwarding path's response, framed onto the socket by `#out`.

  head(status: number, statusText: string, rawHeaders: readonly string[]): void {
    this.#out.head(status, statusText, rawHeaders, this.#closeAfter());
  }

  /** The response in flight is the connection's last: the client asked, half-closed, or we drain. */
  #closeAfter(): boolean {
    return !this.keepAlive || this.#clientEnded || this.ramp.rt.draining;
  }

  body(chunk: Buffer, resume: () => void): boolean {
    return this.#out.body(chunk, resume);
  }

  end(last: Buffer | null, trailers: readonly string[] | null): void {
    this.#out.end(last, trailers);
    this.#exchangeDone();
  }

  answer(status: number, rawHeaders: readonly string[], body: string | Uint8Array): void {
    this.#out.answer(status, rawHeaders, body, this.#closeAfter());
    this.#exchangeDone();
  }

  informational(status: number, rawHeaders: readonly string[]): void {
    this.#out.informational(status, rawHeaders);
  }

  bodyUnread(): void {
    this.#clientEnded = true; // the rest of the body is unread: no further request on this connection
  }

  fail(status: number, body: string): void {
    this.#out.fail(status, body, this.#closeAfter());
    this.#exchangeDone();
  }

  #exchangeDone(): void {
    this.#inFlight = false;
    this.#run = null;
    const s = this.socket;
    s._httpMessage = null;
    if (s.destroyed || s[kLean] === undefined) return;
    if (this.#out.closeAfter || this.#clientEnded) {
      this.#leave();
      // As node:http: closed once the response is flushed, even if the client keeps its side
      // open (the socket is half-open, and may be paused with pipelined requests unread).
      s.destroySoon();
      return;
    }
    this.phase = IDLE;
    this.since = performance.now();
    if (this.#held !== null) process.nextTick(continueHeld, this);
    else if (s.isPaused()) s.resume();
  }

  /** Parses what arrived while the last response was under way. */
  continueHeld(): void {
    if (this.#inFlight || this.socket[kLean] === undefined) return;
    const held = this.#takeHeld(null);
    if (this.socket.isPaused()) this.socket.resume();
    if (held !== null) this.#execute(held);
  }

  /**
   * The client sent FIN. A response still under way is written, and the connection closed
   * after it (a half-closed client is still reading); a partial head gets a 400.
   */
  clientEnded(): void {
    if (this.#inFlight) {
      this.#clientEnded = true;
      this.#held = null; // requests after the FIN are not served: the connection ends
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
    this.#inFlight = false;
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
    if (phase === SILENT || this.socket.bytesRead === 0) {
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
  else inConnectionContext(c.conn, () => h2(c.socket, c.conn));
}

function startHttp1(c: LeanConnection): void {
  if (c.socket.destroyed) return;
  inConnectionContext(c.conn, () => c.ramp.h1.adopt(c.socket, c.conn));
  c.socket.resume();
}

function continueHeld(c: LeanConnection): void {
  c.continueHeld();
}

/**
 * How often the sweep looks: half the shorter timeout (so a deadline is missed by at most half
 * of it), between 100 ms and 1 s. A timeout of 0 is off and does not count.
 */
export function sweepInterval(headerTimeoutMs: number, idleTimeoutMs: number): number {
  const on = [headerTimeoutMs, idleTimeoutMs].filter((t) => t > 0);
  return on.length === 0 ? 1000 : Math.max(100, Math.min(1000, Math.min(...on) / 2));
}

/** The lean on-ramp's handle. */
export interface LeanOnRamp extends SocketOnRamp {
  /** Connections it still owns (reading a head, or with a response under way). */
  readonly size: number;
  close(): void;
}

/**
 * Creates the lean HTTP/1.1 on-ramp of cleartext `endpoint`; `h1` takes over what it does not
 * serve itself, `http2` (or null when HTTP/2 is off) a connection that opens with the preface.
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
    },
    serve(socket: net.Socket, conn: IngressConnection): void {
      const c = new LeanConnection(socket, conn, ramp);
      const s = socket as LeanSocket;
      s[kLean] = c;
      ramp.live.add(c);
      s.on('error', onSocketError);
      s.on('end', onSocketEnd);
      s.on('close', onSocketClose);
      s.on('data', onSocketData);
    },
  };
}
