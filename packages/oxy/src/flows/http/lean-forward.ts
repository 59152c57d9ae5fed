/**
 * The lean forwarding path: an HTTP/1.1 request without a body, when no `handleRequest` or
 * `handleResponse` hook may rewrite the exchange. The request head is serialised by hand and
 * sent through the keep-alive pool (`offramps/http/pool.ts`), and the response is handed, piece
 * by piece, to a {@link LeanResponse}: the lean HTTP/1.1 on-ramp writes it straight onto the
 * client socket; the `node:http` on-ramp adapts a `ServerResponse` to it. No `ClientRequest`,
 * no `IncomingMessage`, no pipes: one run object per request.
 *
 * Order, as on the full path: `EgressHook.handleConnection` → (new upstream connection only:
 * DNS, `handleUpstreamIps`, blocklist, connect, `handleConnectionEstablished`) → request sent →
 * response relayed → audit record.
 */
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import { EgressState, type IngressConnection, RequestState } from '../../context/state.ts';
import { decideEgress, defaultDecision, egressBlocked } from '../../egress/connect.ts';
import { clientReason, httpStatusFor, isOxyError, OXY_ERR, type OxyError, toOxyError } from '../../errors.ts';
import type { EgressDecision } from '../../hooks/egress.ts';
import type { HttpPool, PendingRequest, ResponseSink, UpstreamTarget } from '../../offramps/http/pool.ts';
import { proxyAuthorization } from '../../offramps/upstream-proxy/connect.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { countFailure, errorBody, recordEnd } from '../record.ts';
import { type AbsoluteTarget, serializeRawHeaders } from './headers.ts';

/** Where a lean exchange's response goes. Exactly one of `end` and `fail` is called, once. */
export interface LeanResponse {
  /**
   * The response head, `rawHeaders` as the upstream sent them: hop-by-hop fields are still in,
   * for the receiver to drop as it frames the response (`serializeRawHeaders`,
   * `filterRawHeaders`). Nothing needs to be sent yet.
   */
  head(status: number, statusText: string, rawHeaders: readonly string[]): void;
  /** A piece of the body. Return false to pause the upstream until `resume` is called. */
  body(chunk: Buffer, resume: () => void): boolean;
  /** The response is complete; `last` is a final piece of body, if any. */
  end(last: Buffer | null): void;
  /**
   * The proxy answers `status` with the short text `body` itself (the upstream failed, or the
   * egress decision refused); if the response's head already left, the response is cut instead.
   */
  fail(status: number, body: string): void;
}

/** A running lean exchange, as the on-ramp sees it. */
export interface LeanForward {
  /** The client went away before the response ended: drop the upstream exchange. */
  clientClosed(): void;
}

/** Where a forwarded request goes once its egress decision allowed it. */
export interface ForwardRoute {
  /** The pool key and the address to connect to: the target, or the upstream proxy. */
  readonly target: UpstreamTarget;
  /** The request-target to send: origin-form to the target, absolute-form to a proxy. */
  readonly requestTarget: string;
  /** `Proxy-Authorization` for the upstream proxy, if it has credentials. */
  readonly proxyAuthorization: string | undefined;
}

/**
 * The route of a request to `addr` (`authority` and `path` as the request names them) under an
 * allowing `decision`. Pool keys: the address decided on (the target, or the upstream proxy and
 * its credentials), plus the client connection's id unless the pool may be shared
 * (`egress/agent.ts` says why).
 */
export function routeFor(
  rt: Runtime,
  eg: EgressState,
  decision: Exclude<EgressDecision, { kind: 'block' }>,
  addr: SocketAddr,
  authority: string,
  path: string,
): ForwardRoute {
  const shared = rt.fast.sharedPool ? '' : `|${eg.ingress.id}`;
  if (decision.kind === 'direct') {
    const to = decision.addr.host === addr.host && decision.addr.port === addr.port ? addr : decision.addr;
    return {
      target: { key: `${formatHostPort(to.host, to.port)}${shared}`, egress: eg, addr: to, trusted: false },
      requestTarget: path,
      proxyAuthorization: undefined,
    };
  }
  const proxy = decision.proxy;
  const token = proxyAuthorization(proxy.auth);
  return {
    target: {
      key: `proxy|${formatHostPort(proxy.host, proxy.port)}|${token ?? ''}${shared}`,
      egress: eg,
      addr: { host: proxy.host, port: proxy.port },
      trusted: true,
    },
    requestTarget: `http://${authority}${path}`,
    proxyAuthorization: token,
  };
}

/** A short client-safe reason for an error (`clientReason`, under the name the HTTP flows use). */
export const reasonOf = clientReason;

/**
 * Forwards one bodiless request to the absolute-form `target`; `rawHeaders` are the client's
 * (`[name, value, …]`, hop-by-hop fields still in). Never throws: failures reach `out.fail`.
 */
export function forwardBodiless(
  rt: Runtime,
  pool: HttpPool,
  conn: IngressConnection,
  method: string,
  target: AbsoluteTarget,
  rawHeaders: readonly string[],
  out: LeanResponse,
): LeanForward {
  conn.requests++;
  const request = new RequestState(conn, 'forward', method, target.addr, rt.ext);
  conn.endpoint.metrics.forwardRequests.inc();
  const run = new LeanRun(rt, request, out);
  forkRequest(request, () => {
    const eg = new EgressState(conn, request, target.addr, rt.ext);
    if (rt.fast.defaultEgress) {
      // Without a hook the decision is known at once: no promise on the hot path.
      run.send(pool, eg, defaultDecision(rt, eg), target, rawHeaders);
      return;
    }
    decideEgress(rt, eg).then(
      (d) => run.send(pool, eg, d, target, rawHeaders),
      (e: unknown) => run.failWith(e),
    );
  });
  return run;
}

/** One lean exchange: the pool's sink, and the on-ramp's handle. */
class LeanRun implements ResponseSink, LeanForward {
  readonly #rt: Runtime;
  readonly #request: RequestState;
  readonly #out: LeanResponse;
  #pending: PendingRequest | null = null;
  #bytesDown = 0;
  #done = false;
  /** Checks, every `egress.response_timeout`, that the response body is still moving. */
  #stallTimer: NodeJS.Timeout | undefined;
  #bytesAtCheck = -1;

  constructor(rt: Runtime, request: RequestState, out: LeanResponse) {
    this.#rt = rt;
    this.#request = request;
    this.#out = out;
  }

  send(
    pool: HttpPool,
    eg: EgressState,
    decision: EgressDecision,
    target: AbsoluteTarget,
    rawHeaders: readonly string[],
  ): void {
    if (this.#done) return; // the client left while the egress hook ran
    const request = this.#request;
    request.decisions.push(`egress:${decision.kind}`);
    if (decision.kind === 'block') {
      this.failWith(egressBlocked(decision.reason));
      return;
    }
    const route = routeFor(this.#rt, eg, decision, target.addr, target.authority, target.path);
    let extra = `Host: ${target.authority}\r\n`;
    if (route.proxyAuthorization !== undefined)
      extra += `Proxy-Authorization: ${route.proxyAuthorization}\r\n`;
    const head = `${request.method} ${route.requestTarget} HTTP/1.1\r\n${serializeRawHeaders(rawHeaders, 'host')}${extra}\r\n`;
    this.#pending = pool.request(route.target, head, request.method === 'HEAD', this);
  }

  /** Answers an error of the proxy's own and ends the exchange. */
  failWith(e: unknown): void {
    if (this.#done) return;
    const status = httpStatusFor(e);
    this.#request.status = status;
    this.#request.error = e;
    countFailure(this.#request, status);
    this.#out.fail(status, errorBody(status, reasonOf(e)));
    this.#finish(isOxyError(e) ? e.code : 'error');
  }

  onUpstream(upstream: string, reused: boolean): void {
    // Stamped each time: a retry on a new connection (the reused one was closed) counts from it.
    this.#request.connectedAt = performance.now();
    this.#request.upstream = upstream;
    this.#request.upstreamReused = reused;
  }

  onHead(status: number, statusText: string, rawHeaders: string[]): void {
    this.#request.respondedAt = performance.now();
    this.#request.status = status;
    this.#out.head(status, statusText, rawHeaders);
    const limit = this.#rt.settings.egress.response_timeout;
    if (limit > 0) this.#stallTimer = setTimeout(this.#checkStall, limit);
  }

  /**
   * A response body that made no progress for a whole `egress.response_timeout` (the upstream
   * stopped sending, or the client stopped reading) is cut and its upstream connection closed.
   */
  readonly #checkStall = (): void => {
    if (this.#done) return;
    if (this.#bytesDown !== this.#bytesAtCheck) {
      this.#bytesAtCheck = this.#bytesDown;
      this.#stallTimer?.refresh();
      return;
    }
    this.#pending?.abort();
    this.#out.fail(504, errorBody(504, 'upstream response timeout'));
    this.#finish(OXY_ERR.RESPONSE_TIMEOUT);
  };

  onBody(chunk: Buffer, resume: () => void): boolean {
    this.#bytesDown += chunk.length;
    return this.#out.body(chunk, resume);
  }

  onEnd(last: Buffer | null): void {
    if (last !== null) this.#bytesDown += last.length;
    this.#out.end(last);
    this.#finish('done');
  }

  onError(e: OxyError): void {
    this.failWith(toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream'));
  }

  clientClosed(): void {
    if (this.#done) return;
    this.#pending?.abort();
    this.#finish('client_closed');
  }

  #finish(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#stallTimer);
    recordEnd(this.#rt, this.#request, 0, this.#bytesDown, reason);
  }
}
