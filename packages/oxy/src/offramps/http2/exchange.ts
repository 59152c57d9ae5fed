/**
 * One request sent to an origin that chose HTTP/2: a stream of a shared session
 * (`session-pool.ts`), driven through the same interfaces the HTTP/1.1 pool offers the exchange
 * (`ResponseSink`, `RequestBody`/`BodyOut`, `PendingRequest` of `offramps/http/pool.ts`), so
 * hooks, body stages, audit and metrics see no difference.
 *
 * Ordering rules:
 * - The request's header block is submitted at once; a body follows through {@link StreamBodyOut}
 *   with the stream's backpressure, then trailers (`waitForTrailers` when the body may carry
 *   them), and `egress.response_timeout` runs from the request's end to the response head.
 * - 1xx blocks go to `onInformational`; the final head to `onHead`; DATA to `onBody` (false
 *   pauses the stream); trailers then the end to `onEnd`. A response that ends before the
 *   request body did cancels the rest of the request (RST_STREAM CANCEL), as HTTP/1.1 closes.
 * - A stream that closes before its response ended fails the request (`onError`), unless the
 *   origin never processed it (REFUSED_STREAM, or above a GOAWAY's last stream id), or the
 *   session was found dead before any answer for a bodiless idempotent request: such a request
 *   is sent once more, on another session. A request with a body is never sent twice (its body
 *   was consumed).
 * - `abort` (the client left, a body stage stopped) resets the stream with CANCEL; the session
 *   carries on. Nothing reaches the sink after `abort`.
 */
import http from 'node:http';
import http2 from 'node:http2';
import { OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import type { BodyOut, PendingRequest, RequestBody, ResponseSink, UpstreamTarget } from '../http/pool.ts';
import { http2HeadOf, rawWithoutPseudo, statusOf } from './request-head.ts';
import type { UpstreamSession } from './session-pool.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** Methods a request may be sent twice with (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** How many times a request may be sent in all (the first try and one retry). */
const MAX_ATTEMPTS = 2;

/** What an exchange needs of the session pool. */
export interface Http2Dispatcher {
  /** Sends `ex` (again) on a session with room, opening one if needed. */
  dispatch(ex: Http2Exchange): void;
  /** `egress.response_timeout` (0: none). */
  readonly responseTimeout: number;
}

/** One request to an HTTP/2 origin; also the handle the exchange run holds. */
export class Http2Exchange implements PendingRequest {
  readonly target: UpstreamTarget;
  readonly method: string;
  readonly head: string;
  readonly sink: ResponseSink;
  readonly body: RequestBody | null;
  readonly #up: Http2Dispatcher;
  #headers: http2.OutgoingHttpHeaders | null = null;
  /** Tries so far. */
  attempts = 0;
  aborted = false;
  /** When the origin chose HTTP/1.1 instead: the request as the HTTP/1.1 pool runs it. */
  delegate: PendingRequest | null = null;
  #stream: http2.ClientHttp2Stream | null = null;
  #session: UpstreamSession | null = null;
  #responded = false;
  #gotBytes = false;
  #requestEnded = false;
  #finished = false;
  #trailers: string[] | null = null;
  #error: Error | null = null;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    up: Http2Dispatcher,
    target: UpstreamTarget,
    method: string,
    head: string,
    sink: ResponseSink,
    body: RequestBody | null,
  ) {
    this.#up = up;
    this.target = target;
    this.method = method;
    this.head = head;
    this.sink = sink;
    this.body = body;
  }

  /** Sends the request as a new stream of `session`; `reused`: the session carried streams before. */
  run(session: UpstreamSession, reused: boolean): void {
    if (this.aborted) return;
    this.attempts++;
    this.#session = session;
    this.#headers ??= http2HeadOf(this.head).headers;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.session.request(this.#headers, {
        endStream: this.body === null,
        waitForTrailers: this.body?.chunked === true,
      });
    } catch (e) {
      // A session that began closing under us: nothing was sent, so another one may carry it.
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION') {
        session.retire();
        this.attempts--;
        this.#up.dispatch(this);
        return;
      }
      this.#fail(e);
      return;
    }
    session.opened();
    this.#stream = stream;
    this.sink.onUpstream(session.upstream, reused, 'h2');
    stream.on('headers', this.#onInformational);
    stream.on('response', this.#onResponse);
    stream.on('data', this.#onData);
    stream.on('trailers', this.#onTrailers);
    stream.on('end', this.#onEnd);
    stream.on('error', this.#onError);
    stream.on('close', this.#onClose);
    if (this.body === null) this.#sent();
    else this.body.start(new StreamBodyOut(this, stream));
  }

  /** The whole request went out: its response head must now come within `egress.response_timeout`. */
  #sent(): void {
    this.#requestEnded = true;
    const limit = this.#up.responseTimeout;
    if (limit <= 0 || this.#responded) return;
    this.#timer = setTimeout(() => {
      if (this.#responded || this.#finished) return;
      this.#cancel();
      this.#fail(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
    }, limit);
  }

  /** The request body's end (with trailers when it may carry them). */
  endBody(stream: http2.ClientHttp2Stream, trailers: readonly string[] | null): void {
    if (this.#stream !== stream || this.#finished) return;
    if (this.body?.chunked === true) {
      stream.once('wantTrailers', () => {
        try {
          stream.sendTrailers(trailerBlock(trailers));
        } catch {
          stream.close(NGHTTP2_CANCEL); // a trailer field HTTP/2 cannot carry
        }
      });
    }
    stream.end();
    this.#sent();
  }

  /** True while `stream` is this request's and the response has not ended. */
  live(stream: http2.ClientHttp2Stream): boolean {
    return this.#stream === stream && !this.#finished && !this.aborted;
  }

  readonly #onInformational = (headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]): void => {
    if (this.#finished || this.aborted) return;
    this.#gotBytes = true;
    const status = statusOf(headers);
    if (status >= 100 && status < 200 && status !== 101)
      this.sink.onInformational(status, rawWithoutPseudo(raw));
  };

  readonly #onResponse = (headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]): void => {
    if (this.#finished || this.aborted) return;
    this.#gotBytes = true;
    this.#responded = true;
    clearTimeout(this.#timer);
    const status = statusOf(headers);
    this.sink.onHead(status, http.STATUS_CODES[status] ?? '', rawWithoutPseudo(raw));
  };

  readonly #resume = (): void => {
    if (!this.#finished) this.#stream?.resume();
  };

  readonly #onData = (chunk: Buffer): void => {
    if (this.#finished || this.aborted) return;
    if (!this.sink.onBody(chunk, this.#resume)) this.#stream?.pause();
  };

  readonly #onTrailers = (_headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]): void => {
    this.#trailers = rawWithoutPseudo(raw);
  };

  readonly #onEnd = (): void => {
    if (this.#finished || this.aborted) return;
    if (!this.#responded) return; // a stream ended without a head: 'close' fails it
    this.#finished = true;
    clearTimeout(this.#timer);
    // The answer came before the whole request (a 413, a redirect): the rest is not sent.
    if (!this.#requestEnded) this.#cancel();
    this.sink.onEnd(null, this.#trailers);
  };

  readonly #onError = (e: Error): void => {
    this.#error = e;
  };

  readonly #onClose = (): void => {
    // The stream's slot of the session is free once the stream closed, however it ended.
    const session = this.#session as UpstreamSession;
    session.closed();
    if (this.#finished) return;
    const stream = this.#stream as http2.ClientHttp2Stream;
    this.#finished = true;
    clearTimeout(this.#timer);
    if (this.aborted) return;
    const refused =
      stream.rstCode === NGHTTP2_REFUSED_STREAM ||
      (session.goawayLastStream !== null && (stream.id ?? 0) > session.goawayLastStream);
    const stale = !this.#gotBytes && session.session.destroyed && IDEMPOTENT.has(this.method);
    if (!this.#gotBytes && this.body === null && (refused || stale) && this.attempts < MAX_ATTEMPTS) {
      this.#reset();
      this.#up.dispatch(this);
      return;
    }
    const why =
      this.#error ??
      new Error(
        stream.rstCode === 0 || stream.rstCode === undefined
          ? 'upstream closed the stream'
          : `upstream reset the stream (HTTP/2 error code ${stream.rstCode})`,
      );
    this.sink.onError(toOxyError(why, OXY_ERR.UPSTREAM_FAILED, 'upstream'), this.#responded);
  };

  /** Clears the state of a try, for a retry on another session. */
  #reset(): void {
    this.#stream = null;
    this.#session = null;
    this.#finished = false;
    this.#requestEnded = false;
    this.#error = null;
    this.#trailers = null;
  }

  #cancel(): void {
    const s = this.#stream;
    if (s !== null && !s.closed && !s.destroyed) s.close(NGHTTP2_CANCEL);
  }

  /** Fails the request (before any stream, or on a timeout) unless it already ended. */
  #fail(e: unknown): void {
    if (this.aborted) return;
    const responded = this.#responded;
    if (this.#stream !== null) {
      // The stream's 'close' must not report again.
      if (this.#finished) return;
      this.#finished = true;
    }
    this.sink.onError(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'), responded);
  }

  /** Fails a request still waiting for a session (the connection or its TLS failed). */
  failWaiting(e: unknown): void {
    if (!this.aborted && this.#stream === null) this.#fail(e);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    clearTimeout(this.#timer);
    this.delegate?.abort();
    this.#cancel();
  }
}

/** The request body's way onto its stream; writes after the request ended are dropped. */
class StreamBodyOut implements BodyOut {
  readonly #ex: Http2Exchange;
  readonly #stream: http2.ClientHttp2Stream;
  #ended = false;

  constructor(ex: Http2Exchange, stream: http2.ClientHttp2Stream) {
    this.#ex = ex;
    this.#stream = stream;
  }

  write(chunk: Buffer): boolean {
    if (this.#ended || chunk.length === 0 || !this.#ex.live(this.#stream)) return true;
    return this.#stream.write(chunk);
  }

  onDrain(fn: () => void): void {
    this.#stream.once('drain', fn);
  }

  end(trailers: readonly string[] | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#ex.endBody(this.#stream, trailers);
  }
}

/** The trailer block of `[name, value, …]`, connection-specific fields dropped. */
function trailerBlock(raw: readonly string[] | null): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  if (raw === null) return out;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (name === 'connection' || name === 'transfer-encoding' || name === 'te' || name === 'keep-alive')
      continue;
    const value = raw[i + 1] as string;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [String(prev), value];
  }
  return out;
}
