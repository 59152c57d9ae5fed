/**
 * The HTTP exchange engine's forwarding run: one object per forwarded request, whatever the
 * on-ramp (HTTP/1.1 on any stream, HTTP/2). It runs the request pipeline, sends the request
 * through the keep-alive pool (`offramps/http/pool.ts`, the only HTTP/1.1 client), its body
 * streamed up with backpressure, and hands the response, piece by piece, to an
 * {@link ExchangeResponse}: the HTTP/1.1 on-ramp frames it straight onto the client stream, the
 * HTTP/2 on-ramp writes it to its stream. No `ClientRequest`, no `IncomingMessage`, no pipes.
 *
 * Order: `handleRequest` (when installed) → request body stage → `EgressHook.handleConnection`
 * → (new upstream connection only: DNS, `handleUpstreamIps`, blocklist, connect,
 * `handleConnectionEstablished`, TLS for `https`) → request head sent, body streamed →
 * (`100 Continue` relayed) → `handleResponse` (when installed) → response body stage →
 * response relayed → audit record. Without request or response hooks nothing awaits: the
 * default egress decision is known at once and the head leaves in the same tick.
 *
 * Ordering rules: the run settles once, however it ends (completion, the client leaving, a
 * stalled body, `body_read_timeout` 408, `egress.response_timeout` 504, an upstream failure, a
 * body stage stopping): exactly one audit record, and the upstream request either complete (its
 * connection back in the pool) or aborted (its connection closed). Until the response head left,
 * a failure is answered with an error status; afterwards the response is cut.
 */
import http from 'node:http';
import type { SocketAddr } from '../../context/contexts.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import { decideEgress, defaultDecision, egressBlocked } from '../../egress/connect.ts';
import { clientReason, httpStatusFor, isOxyError, OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import type { EgressDecision } from '../../hooks/egress.ts';
import type { HttpHeaders, RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type {
  BodyOut,
  HttpPool,
  PendingRequest,
  RequestBody,
  ResponseSink,
} from '../../offramps/http/pool.ts';
import { proxyRefused } from '../../offramps/upstream-proxy/connect.ts';
import type { Runtime } from '../../runtime.ts';
import { httpSettingsOf } from '../../settings.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { type BodyStage, BodyStopped, requestBodyStage, responseBodyStage } from './body-stage.ts';
import type { BodySink, ExchangeResponse, ForwardInput, ForwardRun } from './exchange-contract.ts';
import {
  filterRawHeaders,
  rawToHeaders,
  serializeRawHeaders,
  stripHopByHop,
  toRawHeaders,
} from './headers.ts';
import { runRequestHook } from './request-hook.ts';
import { type ForwardRoute, routeFor } from './route.ts';
import { StagePipe } from './stage-pipe.ts';

export type {
  BodySink,
  BodySource,
  ExchangeResponse,
  ForwardInput,
  ForwardRun,
} from './exchange-contract.ts';

/**
 * Forwards one request (`input`) from `conn` through `pool`, its response to `out`. Never
 * throws: failures reach `out.fail`. The on-ramp calls `clientClosed` on the result if the
 * client leaves first.
 */
export function forwardRequest(
  rt: Runtime,
  pool: HttpPool,
  conn: IngressConnection,
  input: ForwardInput,
  out: ExchangeResponse,
): ForwardRun {
  conn.requests++;
  const request = new RequestState(conn, input.kind ?? 'forward', input.method, input.target.addr, rt.ext);
  if (input.parent !== undefined) request.parentId = input.parent.id;
  conn.endpoint.metrics.forwardRequests.inc();
  const run = new ExchangeRun(rt, pool, request, input, out);
  forkRequest(request, () => run.begin());
  return run;
}

/** One exchange: the pool's sink, the request body's feeder, and the on-ramp's handle. */
class ExchangeRun implements ResponseSink, ForwardRun, RequestBody, BodySink {
  readonly #rt: Runtime;
  readonly #pool: HttpPool;
  readonly #request: RequestState;
  readonly #input: ForwardInput;
  readonly #out: ExchangeResponse;
  /** The head as `handleRequest` left it (or built for a body stage), else null. */
  #head: RequestHead | null = null;
  #pending: PendingRequest | null = null;
  #bytesUp = 0;
  #bytesDown = 0;
  #done = false;
  #bodyEnded = false;
  #bodyOut: BodyOut | null = null;
  #bodyTimer: NodeJS.Timeout | undefined;
  #requestPipe: StagePipe | null = null;
  /** The request body's stage, chosen before egress; piped once the request is sent. */
  #upStage: BodyStage | null = null;
  #responsePipe: StagePipe | null = null;
  /** While `handleResponse` runs: the body pieces and end that arrived meanwhile. */
  #held: {
    chunks: Buffer[];
    resume: (() => void) | null;
    end: [Buffer | null, string[] | null] | null;
  } | null = null;
  /** Checks, every `egress.response_timeout`, that the response body is still moving. */
  #stallTimer: NodeJS.Timeout | undefined;
  #bytesAtCheck = -1;
  /** Trailers held while a body stage finishes the body (request side, response side). */
  #upTrailers: readonly string[] | null = null;
  #downTrailers: string[] | null = null;
  /** The request body goes up chunked (the pool's framing). */
  chunked = false;
  /** The route goes to an `https` origin. */
  #https = false;
  /** The route goes to an upstream proxy (absolute-form). */
  #viaProxy = false;

  constructor(
    rt: Runtime,
    pool: HttpPool,
    request: RequestState,
    input: ForwardInput,
    out: ExchangeResponse,
  ) {
    this.#rt = rt;
    this.#pool = pool;
    this.#request = request;
    this.#input = input;
    this.#out = out;
  }

  /** Runs the request pipeline: hook (if any), egress decision, send. */
  begin(): void {
    const rt = this.#rt;
    const request = this.#request;
    const target = this.#input.target;
    const hook = rt.hooks.request;
    if (hook === null) {
      if (!this.#openUpStage()) return;
      const eg = new EgressState(request.ingress, request, target.addr, rt.ext);
      if (rt.fast.defaultEgress) {
        // Without a hook the decision is known at once: no promise on the hot path.
        this.#send(eg, defaultDecision(rt, eg), target.addr);
        return;
      }
      decideEgress(rt, eg).then(
        (d) => this.#send(eg, d, target.addr),
        (e: unknown) => this.failWith(e),
      );
      return;
    }
    runRequestHook(rt, hook, request, target, rawToHeaders(this.#input.rawHeaders))
      .then(async (ran) => {
        if (this.#done) return;
        const d = ran.decision;
        if (d.kind === 'respond') {
          this.#discardBody();
          request.status = d.status;
          const headers: HttpHeaders = { ...d.headers };
          stripHopByHop(headers);
          delete headers['content-length'];
          this.#out.answer(d.status, toRawHeaders(headers), d.body ?? '');
          this.#finish('responded');
          return;
        }
        if (d.kind === 'block') {
          this.#discardBody();
          request.error = d.reason;
          this.#answerError(d.status, d.reason);
          this.#finish('blocked');
          return;
        }
        this.#head = ran.head;
        if (!this.#openUpStage()) return;
        const eg = new EgressState(request.ingress, request, ran.addr, rt.ext);
        const decision = rt.fast.defaultEgress ? defaultDecision(rt, eg) : await decideEgress(rt, eg);
        this.#send(eg, decision, ran.addr);
      })
      .catch((e: unknown) => this.failWith(e));
  }

  #send(eg: EgressState, decision: EgressDecision, addr: SocketAddr): void {
    if (this.#done) return; // the client left while a hook ran
    const request = this.#request;
    request.decisions.push(`egress:${decision.kind}`);
    if (decision.kind === 'block') {
      this.failWith(egressBlocked(decision.reason));
      return;
    }
    const input = this.#input;
    const head = this.#head;
    const scheme = head?.scheme ?? input.target.scheme;
    const authority = head?.authority ?? input.target.authority;
    let route: ForwardRoute;
    try {
      // The name to verify: the target's own, unless a hook sent the request elsewhere.
      const serverName =
        head === null || head.authority === input.target.authority ? input.target.serverName : undefined;
      route = routeFor(
        this.#rt,
        eg,
        decision,
        addr,
        scheme,
        authority,
        head?.path ?? input.target.path,
        serverName,
      );
    } catch (e) {
      this.failWith(e); // `https` through an upstream proxy
      return;
    }
    // The fields: the client's as received (hop-by-hop dropped while serialising), or the hook's.
    let fields: string;
    if (head === null) fields = serializeRawHeaders(input.rawHeaders, 'host');
    else {
      const h = { ...head.headers };
      stripHopByHop(h);
      delete h.host;
      fields = serializeRawHeaders(toRawHeaders(h), '');
    }
    let extra = `Host: ${authority}\r\n`;
    if (route.proxyAuthorization !== undefined)
      extra += `Proxy-Authorization: ${route.proxyAuthorization}\r\n`;
    let body: RequestBody | null = null;
    if (input.body !== null) {
      const stage = this.#upStage;
      if (stage !== null) this.#requestPipe = this.#pipeUp(stage);
      // Framing: the length as the client stated it, unless a stage may change it (or there was
      // none: chunked); `Content-Length` is never sent with chunked.
      this.chunked = input.body.length < 0 || (stage?.rewrites ?? false);
      fields = stripLength(fields);
      extra += this.chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${input.body.length}\r\n`;
      if (input.expectContinue) extra += 'Expect: 100-continue\r\n';
      body = this;
    }
    const method = head?.method ?? request.method;
    this.#https = route.target.tls !== null;
    this.#viaProxy = route.target.trusted;
    const text = `${method} ${route.requestTarget} HTTP/1.1\r\n${fields}${extra}\r\n`;
    this.#pending = this.#pool.request(route.target, method, text, this, body);
  }

  /**
   * Chooses the request body's stage: after the request hook forwarded, before egress (the
   * hooks' order), so a filter hears of an egress refusal (`abort`) and a body declared over
   * `max_request_body` is refused before any upstream work. False when it was refused.
   */
  #openUpStage(): boolean {
    if (this.#input.body === null) return true;
    try {
      this.#upStage = requestBodyStage(this.#rt, this.#headForStage(), this.#request);
      return true;
    } catch (e) {
      this.failWith(e);
      return false;
    }
  }

  /** The head a body stage sees: the hook's, or one built from the client's fields. */
  #headForStage(): RequestHead {
    if (this.#head === null) {
      const t = this.#input.target;
      this.#head = {
        method: this.#request.method,
        scheme: t.scheme,
        authority: t.authority,
        path: t.path,
        headers: rawToHeaders(this.#input.rawHeaders),
      };
    }
    return this.#head;
  }

  // RequestBody: the pool asks for the body once the head left.

  start(out: BodyOut): void {
    if (this.#done) return;
    this.#bodyOut = out;
    const limit = httpSettingsOf(this.#request.ingress.endpoint.settings).body_read_timeout;
    // A body that stops arriving would hold the upstream connection for ever: each piece must
    // follow the last within `body_read_timeout`.
    if (limit > 0) this.#bodyTimer = setTimeout(ExchangeRun.#bodyTimeout, limit, this);
    this.#input.body?.start(this);
  }

  // The timers' callbacks take the run as their argument: no closure per exchange.
  static #bodyTimeout(run: ExchangeRun): void {
    run.failWith(new OxyError(OXY_ERR.BODY_TIMEOUT, 'request body timeout', { source: 'downstream' }));
  }

  // BodySink: the client's body pieces.

  data(chunk: Buffer, resume: () => void): boolean {
    if (this.#done) return true;
    this.#bytesUp += chunk.length;
    this.#bodyTimer?.refresh();
    if (this.#requestPipe !== null) return this.#requestPipe.write(chunk, resume);
    return this.#sendUp(chunk, resume);
  }

  #sendUp(chunk: Buffer, resume: () => void): boolean {
    const out = this.#bodyOut as BodyOut;
    if (out.write(chunk)) return true;
    out.onDrain(resume);
    return false;
  }

  end(trailers: readonly string[] | null): void {
    if (this.#done) return;
    clearTimeout(this.#bodyTimer);
    this.#bodyEnded = true;
    if (this.#requestPipe !== null) {
      this.#upTrailers = trailers;
      this.#requestPipe.end();
      return;
    }
    this.#bodyOut?.end(trailers);
  }

  error(e: unknown): void {
    this.failWith(toOxyError(e, OXY_ERR.BODY_TIMEOUT, 'downstream'));
  }

  #pipeUp(stage: BodyStage): StagePipe {
    return new StagePipe(stage, {
      emit: (chunk, resume) => this.#sendUp(chunk, resume),
      end: (last) => {
        if (last !== null) this.#bodyOut?.write(last);
        this.#bodyOut?.end(this.#upTrailers);
      },
      fail: (e) => this.failWith(e),
    });
  }

  /** The body will not be sent: stop reading it, and the client connection carries no more requests. */
  #discardBody(): void {
    clearTimeout(this.#bodyTimer);
    if (this.#input.body === null || this.#bodyEnded) return;
    this.#input.body.stop();
    this.#out.bodyUnread();
  }

  /** Answers an error of the proxy's own (or cuts the response) and ends the exchange. */
  failWith(e: unknown): void {
    if (this.#done) return;
    let status: number;
    let reason: string;
    if (e instanceof BodyStopped) {
      status = e.status;
      reason = e.reason;
    } else {
      status = httpStatusFor(e);
      reason = clientReason(e);
    }
    this.#request.error = e;
    this.#pending?.abort();
    this.#discardBody();
    this.#answerError(status, reason);
    // A stopped body's code (`OXY_ERR_BODY_STOPPED`, `OXY_ERR_BODY_TOO_LARGE`) is its close reason.
    this.#finish(isOxyError(e) ? e.code : 'error');
  }

  #answerError(status: number, reason: string): void {
    this.#request.status = status;
    countFailure(this.#request, status);
    this.#out.fail(status, errorBody(status, reason));
  }

  // ResponseSink: the upstream's answer.

  onUpstream(upstream: string, reused: boolean, protocol?: 'h2'): void {
    // Stamped each time: a retry on a new connection (the reused one was closed) counts from it.
    this.#request.connectedAt = performance.now();
    this.#request.upstream = upstream;
    this.#request.upstreamReused = reused;
    // What an https origin chose in ALPN (the audit record's `upstream_protocol`).
    if (protocol !== undefined) this.#request.upstreamProtocol = protocol;
    else if (this.#https) this.#request.upstreamProtocol = 'http/1.1';
  }

  onInformational(status: number, rawHeaders: string[]): void {
    if (!this.#done) this.#out.informational(status, rawHeaders);
  }

  onHead(status: number, statusText: string, rawHeaders: string[]): void {
    if (this.#done) return;
    // The upstream proxy refused our credentials: its 407 is not the client's to answer (and
    // reaches it without the hop-by-hop `Proxy-Authenticate`). A 502, as a CONNECT gets.
    if (status === 407 && this.#viaProxy) {
      this.failWith(proxyRefused(status, statusText));
      return;
    }
    const request = this.#request;
    request.respondedAt = performance.now();
    request.status = status;
    const limit = this.#rt.settings.egress.response_timeout;
    if (limit > 0) this.#stallTimer = setTimeout(ExchangeRun.#checkStall, limit, this);
    const hook = this.#rt.hooks.response;
    if (hook === null) {
      this.#startBody(status, statusText, rawHeaders);
      return;
    }
    this.#held = { chunks: [], resume: null, end: null };
    let res: ResponseHead = { status, headers: rawToHeaders(rawHeaders) };
    Promise.resolve()
      .then(() => hook(res, request))
      .then(
        (changed) => {
          if (this.#done) return;
          res = changed ?? res;
          stripHopByHop(res.headers);
          request.status = res.status;
          const held = this.#held;
          this.#held = null;
          this.#startBody(res.status, http.STATUS_CODES[res.status] ?? '', toRawHeaders(res.headers), res);
          if (held === null) return;
          const resume = held.resume ?? noop;
          let ready = true;
          for (const c of held.chunks) ready = this.#sendDown(c, resume) && ready;
          if (held.end !== null) this.#endNow(held.end[0], held.end[1]);
          else if (ready) resume();
        },
        (e: unknown) => this.failWith(this.#rt.hookFailed('HttpRequestHook.handleResponse', e)),
      );
  }

  /** Sends the head on and sets up the response body's stage, if one watches it. */
  #startBody(status: number, statusText: string, rawHeaders: readonly string[], res?: ResponseHead): void {
    let fields = rawHeaders;
    if (!this.#rt.fast.leanForward) {
      const resHead = res ?? { status, headers: rawToHeaders(rawHeaders) };
      let stage: BodyStage | null;
      try {
        stage = responseBodyStage(this.#rt, this.#headForStage().method, resHead, this.#request);
      } catch (e) {
        this.failWith(e); // a length declared over `max_response_body`, a chooser that threw
        return;
      }
      if (stage !== null) {
        // A stage may change the length: the framing is chunked (HTTP/1.1) or none (HTTP/2).
        if (stage.rewrites) fields = filterRawHeaders(rawHeaders, 'content-length');
        this.#responsePipe = new StagePipe(stage, {
          emit: (chunk, resume) => this.#out.body(chunk, resume),
          end: (last) => this.#endDown(last),
          fail: (e) => this.failWith(e),
        });
      }
    }
    this.#out.head(status, statusText, fields);
  }

  /**
   * A response body that made no progress for a whole `egress.response_timeout` (the upstream
   * stopped sending, or the client stopped reading) is cut and its upstream connection closed.
   */
  static #checkStall(run: ExchangeRun): void {
    if (run.#done) return;
    if (run.#bytesDown !== run.#bytesAtCheck) {
      run.#bytesAtCheck = run.#bytesDown;
      run.#stallTimer?.refresh();
      return;
    }
    run.failWith(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
  }

  onBody(chunk: Buffer, resume: () => void): boolean {
    if (this.#done) return true;
    this.#bytesDown += chunk.length;
    const held = this.#held;
    if (held !== null) {
      held.chunks.push(chunk);
      held.resume = resume;
      return false;
    }
    return this.#sendDown(chunk, resume);
  }

  #sendDown(chunk: Buffer, resume: () => void): boolean {
    if (this.#responsePipe !== null) return this.#responsePipe.write(chunk, resume);
    return this.#out.body(chunk, resume);
  }

  onEnd(last: Buffer | null, trailers: string[] | null): void {
    if (this.#done) return;
    if (last !== null) this.#bytesDown += last.length;
    const held = this.#held;
    if (held !== null) held.end = [last, trailers];
    else this.#endNow(last, trailers);
  }

  #endNow(last: Buffer | null, trailers: string[] | null): void {
    // The answer ended before the whole body went up (a 413, a redirect): the rest is not read,
    // and the upstream connection (mid-request) is not reused.
    if (!this.#bodyEnded) this.#discardBody();
    if (this.#responsePipe !== null) {
      this.#downTrailers = trailers;
      if (last !== null) this.#responsePipe.write(last, noop);
      this.#responsePipe.end();
      return;
    }
    this.#out.end(last, trailers);
    this.#finish('done');
  }

  #endDown(last: Buffer | null): void {
    if (this.#done) return;
    this.#out.end(last, this.#downTrailers);
    this.#finish('done');
  }

  onError(e: OxyError): void {
    this.failWith(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'));
  }

  clientClosed(): void {
    if (this.#done) return;
    this.#pending?.abort();
    this.#input.body?.stop();
    this.#finish('client_closed');
  }

  #finish(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#stallTimer);
    clearTimeout(this.#bodyTimer);
    if (this.#requestPipe !== null) this.#requestPipe.abort(reason);
    else this.#upStage?.abort(reason);
    this.#responsePipe?.abort(reason);
    recordEnd(this.#rt, this.#request, this.#bytesUp, this.#bytesDown, reason);
  }
}

function noop(): void {}

/** Serialised header lines without `Content-Length` (the engine states the framing itself). */
function stripLength(lines: string): string {
  if (!/(?:^|\n)content-length:/i.test(lines)) return lines;
  return lines
    .split('\r\n')
    .filter((l) => !/^content-length:/i.test(l))
    .join('\r\n');
}
