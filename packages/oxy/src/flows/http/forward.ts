/**
 * Forwarding for the HTTP/2 on-ramp (and any on-ramp holding Node's request/response pair):
 * adapts Node's HTTP/2 compatibility request and response to the HTTP exchange engine
 * (`exchange.ts`), which runs the request pipeline and sends the request through the
 * keep-alive pool (`offramps/http/pool.ts`), the only HTTP/1.1 client. HTTP/1.1 on-ramps frame
 * the engine's response onto their stream themselves (`onramps/http1/`).
 *
 * Order: as in `exchange.ts`; this module only moves bytes between Node's objects and the
 * engine. Ordering rule: the response's 'close' before its end tells the engine the client
 * left (an HTTP/2 RST_STREAM or a lost connection), so the exchange settles once either way.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import type { Readable } from 'node:stream';
import type { RequestKind } from '../../context/contexts.ts';
import type { IngressConnection, RequestState } from '../../context/state.ts';
import type { HttpHeaders } from '../../hooks/http-request.ts';
import type { HttpPool } from '../../offramps/http/pool.ts';
import type { Runtime } from '../../runtime.ts';
import {
  type BodySink,
  type BodySource,
  type ExchangeResponse,
  type ForwardRun,
  forwardRequest,
} from './exchange.ts';
import { type AbsoluteTarget, filterRawHeaders, rawToHeaders } from './headers.ts';

/** The request side an on-ramp hands over: a readable body with Node's head fields. */
export interface IncomingRequest extends Readable {
  readonly method?: string | undefined;
  /** True once the whole message was received (Node sets it on both HTTP versions). */
  readonly complete?: boolean;
  readonly rawHeaders: string[];
  readonly headers: HttpHeaders;
  readonly rawTrailers?: string[];
}

/** Forwards one request held in Node's request/response pair; never throws (failures become error responses). */
export function serveForward(
  rt: Runtime,
  pool: HttpPool,
  conn: IngressConnection,
  req: IncomingRequest,
  res: http.ServerResponse,
  target: AbsoluteTarget,
  within?: { readonly kind: RequestKind; readonly parent: RequestState },
): void {
  if (rt.draining) res.shouldKeepAlive = false;
  const out = new ServerResponseOut(res, rt, req);
  out.run = forwardRequest(
    rt,
    pool,
    conn,
    {
      method: req.method ?? 'GET',
      target,
      rawHeaders: req.rawHeaders,
      body: bodyOf(req),
      // Node answered `Expect: 100-continue` itself (HTTP/1.1) or there is none (HTTP/2).
      expectContinue: false,
      ...(within === undefined ? {} : { kind: within.kind, parent: within.parent }),
    },
    out,
  );
}

/** The body of `req` for the engine, or null when it has none (then it is drained). */
function bodyOf(req: IncomingRequest): BodySource | null {
  const stream = (req as { stream?: http2.ServerHttp2Stream }).stream;
  const te = req.headers['transfer-encoding'];
  const cl = req.headers['content-length'];
  const length = typeof cl === 'string' && /^\d+$/.test(cl) ? Number(cl) : -1;
  const none =
    stream !== undefined ? stream.endAfterHeaders || length === 0 : te === undefined && length <= 0;
  if (none) {
    req.resume();
    return null;
  }
  return new ReadableBody(req, te !== undefined ? -1 : length);
}

/** A Node readable request body as the engine's {@link BodySource}. */
class ReadableBody implements BodySource {
  readonly length: number;
  readonly #req: IncomingRequest;
  #sink: BodySink | null = null;
  readonly #resume = (): void => {
    this.#req.resume();
  };
  readonly #onData = (chunk: Buffer): void => {
    if (this.#sink !== null && !this.#sink.data(chunk, this.#resume)) this.#req.pause();
  };
  readonly #onEnd = (): void => {
    const t = this.#req.rawTrailers;
    this.#sink?.end(t !== undefined && t.length > 0 ? t : null);
  };
  readonly #onError = (e: Error): void => {
    this.#sink?.error(e);
  };

  constructor(req: IncomingRequest, length: number) {
    this.#req = req;
    this.length = length;
  }

  start(sink: BodySink): void {
    this.#sink = sink;
    const req = this.#req;
    req.on('data', this.#onData);
    req.once('end', this.#onEnd);
    req.on('error', this.#onError);
  }

  stop(): void {
    this.#sink = null;
    const req = this.#req;
    req.off('data', this.#onData);
    req.off('end', this.#onEnd);
    req.resume(); // drained, not held
  }
}

/**
 * Cuts a response that has started: the HTTP/1.1 connection is closed, the HTTP/2 stream reset
 * with INTERNAL_ERROR (a destroy would send NO_ERROR, which reads as a clean end).
 */
function cutResponse(res: http.ServerResponse): void {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) res.destroy();
  else if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
}

/** The engine's response side over Node's response object (HTTP/2 compatibility, or `node:http`). */
class ServerResponseOut implements ExchangeResponse {
  readonly #res: http.ServerResponse;
  readonly #rt: Runtime;
  readonly #req: IncomingRequest;
  /** Where 'close' and 'drain' are heard: the HTTP/2 stream (its compatibility response, made by hand, relays neither), or the response. */
  readonly #events: NodeJS.EventEmitter;
  run: ForwardRun | null = null;

  constructor(res: http.ServerResponse, rt: Runtime, req: IncomingRequest) {
    this.#res = res;
    this.#rt = rt;
    this.#req = req;
    this.#events = (res as { stream?: http2.ServerHttp2Stream }).stream ?? res;
    // Closed before the engine ended the exchange: the client left (after the end: nothing to do).
    this.#events.once('close', () => this.run?.clientClosed());
  }

  head(status: number, statusText: string, rawHeaders: readonly string[]): void {
    const res = this.#res;
    res.sendDate = false;
    if (this.#rt.draining) res.shouldKeepAlive = false;
    res.writeHead(status, statusText, filterRawHeaders(rawHeaders, ''));
  }

  body(chunk: Buffer, resume: () => void): boolean {
    if (this.#res.write(chunk)) return true;
    this.#events.once('drain', resume);
    return false;
  }

  end(last: Buffer | null, trailers: readonly string[] | null): void {
    if (trailers !== null) this.#res.addTrailers(rawToHeaders(trailers) as http.OutgoingHttpHeaders);
    if (last === null) this.#res.end();
    else this.#res.end(last);
  }

  fail(status: number, body: string): void {
    const res = this.#res;
    if (res.headersSent) {
      cutResponse(res);
      return;
    }
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  answer(status: number, rawHeaders: readonly string[], body: string | Uint8Array): void {
    const res = this.#res;
    res.writeHead(status, [...rawHeaders, 'content-length', String(Buffer.byteLength(body))]);
    res.end(body);
  }

  informational(): void {
    // Node answered `Expect: 100-continue` itself; HTTP/2 clients do not wait for a 100.
  }

  /**
   * The request body is not read to its end: an HTTP/1.1 connection closes after the response,
   * an HTTP/2 stream is reset with NO_ERROR after it (RFC 9113 §8.1: the client may stop sending).
   */
  bodyUnread(): void {
    const res = this.#res;
    const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
    if (stream === undefined) {
      res.shouldKeepAlive = false;
      // A head already sent said keep-alive: the connection still ends once the response is out.
      const socket = res.socket; // detached from the response by 'finish'
      if (res.headersSent) res.once('finish', () => socket?.destroySoon());
      return;
    }
    stream.once('finish', () => {
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
    this.#req.resume();
  }
}
