/**
 * The forwarding pipeline for absolute-form requests (`GET http://host/path`): request hook,
 * egress decision, the keep-alive upstream pool, response hook, and the body streamed back.
 * Protocol-neutral: an on-ramp hands it a Node request/response pair (HTTP/1.1's, or HTTP/2's
 * compatibility objects) and the parsed target.
 *
 * Order: `handleRequest` → `EgressHook.handleConnection` → (new connection only: DNS,
 * `handleUpstreamIps`, blocklist, connect, `handleConnectionEstablished`) → request sent,
 * body piped → `handleResponse` → response piped → audit record. With body hooks or limits
 * (`body-stage.ts`), `getRequestBodyFilter` runs right after `handleRequest` (before any egress
 * hook, so a body declared too large is answered 413 without connecting) and
 * `getResponseBodyFilter` right after `handleResponse`; the bodies then flow through their stages.
 *
 * Two upstream paths, one behaviour: an HTTP/1.1 request without a body and without
 * `handleRequest`/`handleResponse` goes through the lean path (`lean-forward.ts`: head written
 * at once through the pool of `offramps/http/pool.ts`, response parsed in C++ and written
 * straight into `res`); everything else (bodies, hooks that may rewrite the exchange, HTTP/2)
 * through `http.request` and the `EgressAgent`. Both run the same egress pipeline. (Cleartext
 * HTTP/1.1 takes the lean path before `node:http` sees the request: `onramps/http1/lean.ts`.)
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import type { RequestKind, SocketAddr } from '../../context/contexts.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import type { EgressAgent, EgressRequestOptions } from '../../egress/agent.ts';
import { decideEgress, defaultDecision, egressBlocked } from '../../egress/connect.ts';
import { httpStatusFor, isOxyError, OXY_ERR, OxyError } from '../../errors.ts';
import type { HttpHeaders, RequestDecision, RequestHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { withoutLength } from './body-pump.ts';
import { BodyStopped, requestBodyStage } from './body-stage.ts';
import { closeAfterResponse, exchange } from './forward-exchange.ts';
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

/** Where a request read inside a tunnel came from (see {@link serveForward}). */
export interface WithinTunnel {
  /** `intercepted` (inside a TLS tunnel Oxy terminated) or `tunnelled` (plain HTTP inside one). */
  readonly kind: RequestKind;
  /** The tunnel's CONNECT request, named in the audit record's `parent_request_id`. */
  readonly parent: RequestState;
}

/**
 * Forwards one absolute-form request; never throws (failures become error responses). An
 * `https` target goes to the origin over verified TLS (`offramps/tls/origin.ts`), never in the
 * clear. `within` marks a request read inside a tunnel (its agent is then the tunnel's own).
 */
export function serveForward(
  rt: Runtime,
  agent: EgressAgent,
  conn: IngressConnection,
  req: IncomingRequest,
  res: http.ServerResponse,
  target: AbsoluteTarget,
  within?: WithinTunnel,
): void {
  if (rt.fast.leanForward && within === undefined && target.scheme === 'http' && isBodiless(req)) {
    // The lean path: no hook may rewrite the exchange and nothing to stream up.
    req.resume();
    if (rt.draining) res.shouldKeepAlive = false;
    const out = new ServerResponseOut(res, rt);
    out.run = forwardBodiless(rt, agent.pool, conn, req.method ?? 'GET', target, req.rawHeaders, out);
    return;
  }
  conn.requests++;
  const request = new RequestState(conn, within?.kind ?? 'forward', req.method ?? 'GET', target.addr, rt.ext);
  if (within !== undefined) request.parentId = within.parent.id;
  conn.endpoint.metrics.forwardRequests.inc();
  if (rt.draining) res.shouldKeepAlive = false;
  forkRequest(request, () => forward(rt, agent, request, req, res, target)).catch((e: unknown) => {
    // A body refused before it was read (declared over the limit): the connection cannot
    // carry another request behind it.
    if (e instanceof BodyStopped && !req.complete) closeAfterResponse(req, res);
    answerError(res, request, httpStatusFor(e), reasonOf(e));
    request.error = e;
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
      if (d.kind === 'block') request.error = d.reason;
      recordEnd(rt, request, 0, 0, d.kind === 'block' ? 'blocked' : 'responded');
      return;
    }
    head = ran.head;
    addr = ran.addr;
  }
  // The head the body hooks see: the request hook's (with its edits), or the request as it came.
  const bodyHead: RequestHead = head ?? {
    method: request.method,
    scheme: target.scheme,
    authority: target.authority,
    path: target.path,
    headers: req.headers,
  };
  // Throws BodyStopped (answered by the caller) for a body declared over `max_request_body`.
  const requestStage = mayHaveBody(req) ? requestBodyStage(rt, bodyHead, request) : null;

  let options: EgressRequestOptions;
  try {
    const eg = new EgressState(request.ingress, request, addr, rt.ext);
    // Without a hook the decision is known at once: no await on the hot path.
    const decision = rt.fast.defaultEgress ? defaultDecision(rt, eg) : await decideEgress(rt, eg);
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
    // A body the app may rewrite has no length known in advance: send it chunked.
    if (requestStage?.rewrites === true) {
      headers = withoutLength(headers);
      headers.push('Transfer-Encoding', 'chunked');
    }

    const secure = target.scheme === 'https';
    // TLS through an upstream proxy would need a CONNECT there first: refused, never sent in the clear.
    if (secure && decision.kind === 'viaProxy')
      throw new OxyError(OXY_ERR.UPSTREAM_FAILED, 'https:// targets cannot go through an upstream proxy', {
        source: 'internal',
        status: 502,
      });
    const route = routeFor(rt, eg, decision, addr, authority, path);
    if (route.proxyAuthorization !== undefined) headers.push('Proxy-Authorization', route.proxyAuthorization);
    options = {
      agent,
      method: head?.method ?? request.method,
      path: route.requestTarget,
      headers,
      setHost: false,
      oxyEgress: eg,
      oxyAddr: route.target.addr,
      oxyTrusted: route.target.trusted,
      oxyPoolKey: secure ? `https|${route.target.key}` : route.target.key,
      oxyCancel: { cancelled: false },
      ...(secure ? { oxyTls: addr.host } : {}),
    };
  } catch (e) {
    // The body's filter was chosen before egress: it hears that the request ended without it.
    requestStage?.abort(isOxyError(e) ? e.code : 'error');
    throw e;
  }

  await exchange(rt, request, req, res, options, bodyHead, requestStage);
}

/** False when the request certainly has no body (a zero length, HTTP/2 END_STREAM on its head). */
function mayHaveBody(req: IncomingRequest): boolean {
  const h = req.headers;
  if (h['content-length'] === '0') return false;
  if (req instanceof http.IncomingMessage)
    return h['transfer-encoding'] !== undefined || h['content-length'] !== undefined;
  const stream = (req as { stream?: { endAfterHeaders?: boolean } }).stream;
  return stream?.endAfterHeaders !== true;
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
