/**
 * The forwarding pipeline for absolute-form requests (`GET http://host/path`): request hook,
 * egress decision, the keep-alive upstream pool, response hook, and the body streamed back.
 * Protocol-neutral: an on-ramp hands it a Node request/response pair (HTTP/1.1's, or HTTP/2's
 * compatibility objects) and the parsed target.
 *
 * Order: `handleRequest` → `EgressHook.handleConnection` → (new connection only: DNS,
 * `handleUpstreamIps`, blocklist, connect, `handleConnectionEstablished`) → request sent,
 * body piped → `handleResponse` → response piped → audit record.
 *
 * Two upstream paths, one behaviour: an HTTP/1.1 request without a body and without
 * `handleRequest`/`handleResponse` goes through the lean path (`lean-forward.ts`: head written
 * at once through the pool of `offramps/http/pool.ts`, response parsed in C++ and written
 * straight into `res`); everything else (bodies, hooks that may rewrite the exchange, HTTP/2)
 * through `http.request` and the `EgressAgent`. Both run the same egress pipeline. (Cleartext
 * HTTP/1.1 takes the lean path before `node:http` sees the request: `onramps/http1/lean.ts`.)
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import type { EgressAgent, EgressRequestOptions } from '../../egress/agent.ts';
import { decideEgress, defaultDecision, egressBlocked } from '../../egress/connect.ts';
import { httpStatusFor, isOxyError, OXY_ERR, OxyError, toOxyError } from '../../errors.ts';
import type { HttpHeaders, RequestDecision, RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { type AbsoluteTarget, filterRawHeaders, stripHopByHop, toRawHeaders } from './headers.ts';
import { forwardBodiless, type LeanForward, type LeanResponse, reasonOf, routeFor } from './lean-forward.ts';
import { runRequestHook } from './request-hook.ts';

/** The request side an on-ramp hands over: a readable body with Node's head fields. */
export interface IncomingRequest extends Readable {
  readonly method?: string | undefined;
  /** True once the whole message was received (Node sets it on both HTTP versions). */
  readonly complete?: boolean;
  readonly rawHeaders: string[];
  readonly headers: HttpHeaders;
}

/** Sends an error the proxy answers itself, unless the response has started (then it is cut). */
export function answerError(
  res: http.ServerResponse,
  request: RequestState,
  status: number,
  message: string,
): void {
  request.status = status;
  countFailure(request, status);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(status, message);
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

/** Forwards one absolute-form request; never throws (failures become error responses). */
export function serveForward(
  rt: Runtime,
  agent: EgressAgent,
  conn: IngressConnection,
  req: IncomingRequest,
  res: http.ServerResponse,
  target: AbsoluteTarget,
): void {
  if (rt.hooks.request === null && rt.hooks.response === null && isBodiless(req)) {
    // The lean path: no hook may rewrite the exchange and nothing to stream up.
    req.resume();
    if (rt.draining) res.shouldKeepAlive = false;
    const out = new ServerResponseOut(res, rt);
    out.run = forwardBodiless(rt, agent.pool, conn, req.method ?? 'GET', target, req.rawHeaders, out);
    return;
  }
  conn.requests++;
  const request = new RequestState(conn, 'forward', req.method ?? 'GET', target.addr, rt.ext);
  conn.endpoint.metrics.forwardRequests.inc();
  if (rt.draining) res.shouldKeepAlive = false;
  forkRequest(request, () => forward(rt, agent, request, req, res, target)).catch((e: unknown) => {
    answerError(res, request, httpStatusFor(e), reasonOf(e));
    recordEnd(rt, request, 0, 0, isOxyError(e) ? e.code : 'error');
  });
}

function respondDirect(res: http.ServerResponse, request: RequestState, d: RequestDecision): void {
  if (d.kind === 'respond') {
    request.status = d.status;
    const body = d.body ?? '';
    res.writeHead(d.status, { ...d.headers, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } else if (d.kind === 'block') {
    answerError(res, request, d.status, d.reason);
  }
}

async function forward(
  rt: Runtime,
  agent: EgressAgent,
  request: RequestState,
  req: IncomingRequest,
  res: http.ServerResponse,
  target: AbsoluteTarget,
): Promise<void> {
  let head: RequestHead | null = null;
  let addr: SocketAddr = target.addr;
  const requestHook = rt.hooks.request;
  if (requestHook !== null) {
    const ran = await runRequestHook(rt, requestHook, request, target, req.headers);
    const d = ran.decision;
    if (d.kind !== 'forward') {
      req.resume();
      respondDirect(res, request, d);
      recordEnd(rt, request, 0, 0, d.kind === 'block' ? 'blocked' : 'responded');
      return;
    }
    head = ran.head;
    addr = ran.addr;
  }

  const eg = new EgressState(request.ingress, request, addr, rt.ext);
  // Without a hook the decision is known at once: no await on the hot path.
  const decision = rt.hooks.egressConnection === null ? defaultDecision(rt, eg) : await decideEgress(rt, eg);
  request.decisions.push(`egress:${decision.kind}`);
  if (decision.kind === 'block') throw egressBlocked(decision.reason);

  const authority = head?.authority ?? target.authority;
  const path = head?.path ?? target.path;
  let headers: string[];
  if (head === null) {
    headers = filterRawHeaders(req.rawHeaders, 'host');
  } else {
    const h = { ...head.headers };
    stripHopByHop(h);
    delete h.host;
    headers = toRawHeaders(h);
  }
  headers.push('Host', authority);

  const route = routeFor(rt, eg, decision, addr, authority, path);
  if (route.proxyAuthorization !== undefined) headers.push('Proxy-Authorization', route.proxyAuthorization);
  const options: EgressRequestOptions = {
    agent,
    method: head?.method ?? request.method,
    path: route.requestTarget,
    headers,
    setHost: false,
    oxyEgress: eg,
    oxyAddr: route.target.addr,
    oxyTrusted: route.target.trusted,
    oxyPoolKey: route.target.key,
    oxyCancel: { cancelled: false },
  };

  await exchange(rt, request, req, res, options);
}

/**
 * True when the response reached its end on the client side. On HTTP/1.1 that is the
 * response's own `writableFinished`; the HTTP/2 compatibility response (and its stream) report
 * `true` there as soon as the stream closes, a client's RST_STREAM included, so HTTP/2 asks
 * how the stream closed: without an error code, after we ended our side.
 */
function responseComplete(res: http.ServerResponse): boolean {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) return res.writableFinished;
  return stream.writableEnded && (stream.rstCode ?? 0) === http2.constants.NGHTTP2_NO_ERROR;
}

/** True when the client can no longer get this response (it reset the stream, or hung up). */
function clientGone(res: http.ServerResponse): boolean {
  const stream = (res as { stream?: Duplex }).stream;
  if (stream !== undefined) return stream.destroyed;
  return res.destroyed || (res.socket?.destroyed ?? true);
}

/**
 * Sends the request upstream, streams its body up and the response down. Settles once the
 * exchange is over however it ends, with exactly one audit record written and the upstream
 * request either complete (its connection back in the pool) or destroyed; rejects (nothing
 * recorded yet: the caller answers and records) only while the client can still get an error
 * status.
 */
function exchange(
  rt: Runtime,
  request: RequestState,
  req: IncomingRequest,
  res: http.ServerResponse,
  options: EgressRequestOptions,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (clientGone(res)) {
      // The client left while the hooks or the egress decision ran: nothing to send.
      req.resume();
      recordEnd(rt, request, 0, 0, 'client_closed');
      resolve();
      return;
    }
    const upReq = http.request(options);
    let bytesUp = 0;
    let bytesDown = 0;
    let settled = false;
    let bodyTimer: NodeJS.Timeout | undefined;
    let upResponse: http.IncomingMessage | null = null;
    const bodyTimeout = request.ingress.endpoint.settings.body_read_timeout;

    /** Ends the exchange with its record; the upstream request is dropped unless it completed. */
    const settle = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(bodyTimer);
      req.unpipe(upReq);
      if (options.oxyCancel !== undefined) options.oxyCancel.cancelled = true;
      if (!upReq.writableFinished || upResponse === null || !upResponse.complete) upReq.destroy();
      recordEnd(rt, request, bytesUp, bytesDown, reason);
      resolve();
    };
    /** Fails the exchange: an error status while none was sent, otherwise the response is cut. */
    const fail = (e: OxyError): void => {
      if (settled) return;
      if (res.headersSent) {
        request.status = httpStatusFor(e);
        cutResponse(res);
        settle(e.code);
        return;
      }
      settled = true;
      clearTimeout(bodyTimer);
      req.unpipe(upReq);
      if (options.oxyCancel !== undefined) options.oxyCancel.cancelled = true;
      upReq.destroy();
      // The request body was not read to its end: the connection cannot carry another request.
      if (!req.complete) closeAfterResponse(req, res);
      reject(e);
    };

    upReq.on('error', (e) => fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream')));
    // Once the request is sent, its response head must come within `egress.response_timeout`.
    const responseLimit = rt.settings.egress.response_timeout;
    let responseTimer: NodeJS.Timeout | undefined;
    if (responseLimit > 0)
      upReq.once('finish', () => {
        if (settled || upResponse !== null) return;
        responseTimer = setTimeout(() => {
          if (upResponse === null)
            fail(new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }));
        }, responseLimit);
      });
    res.once('close', () => clearTimeout(responseTimer));
    upReq.once('close', () => clearTimeout(responseTimer));
    // A 101 to a request that did not ask to switch (hop-by-hop `Upgrade` is never forwarded):
    // Node reports it as an upgrade, or as an informational response followed by nothing.
    upReq.on('upgrade', (_upRes, socket: Duplex) => {
      socket.destroy();
      fail(switchedUnasked());
    });
    upReq.on('information', (info: { statusCode: number }) => {
      if (info.statusCode === 101) fail(switchedUnasked());
    });
    res.on('close', () =>
      settle(upResponse?.complete === true && responseComplete(res) ? 'done' : 'client_closed'),
    );
    upReq.on('response', (upRes) => {
      if (settled) {
        upRes.destroy();
        return;
      }
      if (upRes.statusCode === 101) {
        // A 101 without `Upgrade` reaches here as a final response: nothing can follow it.
        upRes.destroy();
        fail(switchedUnasked());
        return;
      }
      upResponse = upRes;
      clearTimeout(responseTimer);
      const s = upReq.socket;
      if (s !== null && s.remoteAddress !== undefined)
        request.upstream = formatHostPort(s.remoteAddress, s.remotePort ?? 0);
      relayResponse(rt, request, upRes, res).then(
        () => {
          if (settled) return;
          upRes.on('data', (chunk: Buffer) => {
            bytesDown += chunk.length;
          });
          upRes.on('error', () => cutResponse(res));
          upRes.pipe(res);
          // A body that makes no progress for a whole `egress.response_timeout` (the upstream
          // stopped sending, or the client stopped reading) is cut.
          if (responseLimit > 0) {
            let seen = -1;
            const stall = setTimeout(function check() {
              if (settled) return;
              if (bytesDown !== seen) {
                seen = bytesDown;
                stall.refresh();
                return;
              }
              settle(OXY_ERR.RESPONSE_TIMEOUT);
              cutResponse(res);
            }, responseLimit);
            res.once('close', () => clearTimeout(stall));
          }
        },
        (e: unknown) => fail(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream')),
      );
    });
    if (req.complete && req.readableLength === 0) {
      // No body (or an empty one), already read: send the request now, not a tick after `end`.
      upReq.end();
      req.resume();
      return;
    }
    // A body that stops arriving would hold the upstream connection for ever: each piece must
    // follow the last within `body_read_timeout`.
    const onBodyTimeout = (): void => {
      fail(new OxyError(OXY_ERR.BODY_TIMEOUT, 'request body timeout', { source: 'downstream' }));
    };
    if (bodyTimeout > 0) bodyTimer = setTimeout(onBodyTimeout, bodyTimeout);
    req.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      bodyTimer?.refresh();
    });
    req.on('end', () => clearTimeout(bodyTimer));
    req.pipe(upReq);
  });
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

function switchedUnasked(): OxyError {
  return new OxyError(OXY_ERR.UPSTREAM_FAILED, 'upstream switched protocols without being asked', {
    source: 'upstream',
  });
}

/**
 * Makes the client connection end once the response is written: an HTTP/1.1 connection closes,
 * an HTTP/2 stream is reset with NO_ERROR after the response (RFC 9113 §8.1: the client may stop
 * sending its body).
 */
function closeAfterResponse(req: IncomingRequest, res: http.ServerResponse): void {
  const stream = (res as { stream?: http2.ServerHttp2Stream }).stream;
  if (stream === undefined) {
    res.shouldKeepAlive = false;
    return;
  }
  stream.once('finish', () => {
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
  req.resume();
}

/** True for an HTTP/1.1 request that carries no body (no `Transfer-Encoding`, no or a zero length). */
function isBodiless(req: IncomingRequest): boolean {
  if (!(req instanceof http.IncomingMessage)) return false;
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined) return false;
  const cl = h['content-length'];
  return cl === undefined || cl === '0';
}

/** The lean path's response side over a `node:http` response (HTTP/1.1 on-ramp over TLS, say). */
class ServerResponseOut implements LeanResponse {
  readonly #res: http.ServerResponse;
  readonly #rt: Runtime;
  run: LeanForward | null = null;

  constructor(res: http.ServerResponse, rt: Runtime) {
    this.#res = res;
    this.#rt = rt;
    res.once('close', () => {
      if (!res.writableFinished) this.run?.clientClosed();
    });
  }

  head(status: number, statusText: string, rawHeaders: readonly string[]): void {
    const res = this.#res;
    res.sendDate = false;
    if (this.#rt.draining) res.shouldKeepAlive = false;
    res.writeHead(status, statusText, filterRawHeaders(rawHeaders, ''));
  }

  body(chunk: Buffer, resume: () => void): boolean {
    if (this.#res.write(chunk)) return true;
    this.#res.once('drain', resume);
    return false;
  }

  end(last: Buffer | null): void {
    if (last === null) this.#res.end();
    else this.#res.end(last);
  }

  fail(status: number, body: string): void {
    const res = this.#res;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}

async function relayResponse(
  rt: Runtime,
  request: RequestState,
  upRes: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const status = upRes.statusCode ?? 502;
  request.status = status;
  res.sendDate = false;
  if (rt.draining) res.shouldKeepAlive = false;
  const hook = rt.hooks.response;
  if (hook === null) {
    res.writeHead(status, upRes.statusMessage, filterRawHeaders(upRes.rawHeaders, ''));
    return;
  }
  let resHead: ResponseHead = { status, headers: { ...upRes.headers } };
  try {
    resHead = (await hook(resHead, request)) ?? resHead;
  } catch (e) {
    throw rt.hookFailed('HttpRequestHook.handleResponse', e);
  }
  stripHopByHop(resHead.headers);
  request.status = resHead.status;
  res.writeHead(resHead.status, toRawHeaders(resHead.headers));
}
