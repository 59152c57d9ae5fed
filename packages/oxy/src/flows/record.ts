/**
 * The end of a request or tunnel: its audit record, `HttpRequestHook.handleRequestEnd`, the
 * DEBUG line of a failed request and its failure metric, in one place so every on-ramp reports
 * the same fields.
 *
 * Ordering rule: {@link recordEnd} runs exactly once per request or tunnel, after its status
 * and upstream are final; the hook fires before the audit record is written (a throwing hook
 * is logged and counted and changes nothing). With no hook, no audit and DEBUG off it returns
 * after three branches.
 */
import { log } from 'foundations/telemetry';
import { type AuditRecord, auditIdentity } from '../audit.ts';
import { formatAddr, formatHostPort } from '../context/addr.ts';
import type { RequestKind } from '../context/contexts.ts';
import type { IngressConnection, RequestState } from '../context/state.ts';
import { clientReason, isOxyError } from '../errors.ts';
import type { RequestEndInfo, RequestError } from '../hooks/http-request.ts';
import { proxyHeaderView } from '../protocols/proxy-protocol/view.ts';
import type { Runtime } from '../runtime.ts';
import { httpMetrics } from '../telemetry/metrics.ts';

/** The audit record kind of each request kind: streams are tunnels, datagram sessions their own. */
const RECORD_KIND: Readonly<Record<RequestKind, AuditRecord['kind']>> = {
  forward: 'request',
  connect: 'tunnel',
  upgrade: 'tunnel',
  tcp: 'tunnel',
  udp: 'udp_session',
  'connect-udp': 'udp_session',
  'ip-tcp': 'tunnel',
  'ip-udp': 'udp_session',
  intercepted: 'request',
  tunnelled: 'request',
  // A CONNECT-IP tunnel: bytes of IP packets, and the packets counted as datagrams.
  'connect-ip': 'tunnel',
};

/**
 * Whether a unit of each kind came as an HTTP request. A `tcp` endpoint's connection, a `udp`
 * session and an IP tunnel's flows carry no HTTP: their failures count in their own metrics
 * (`oxy_egress_connect_failed_total`, `oxy_udp_*`), never as HTTP requests.
 */
const HTTP_KIND: Readonly<Record<RequestKind, boolean>> = {
  forward: true,
  connect: true,
  upgrade: true,
  'connect-udp': true,
  'connect-ip': true,
  intercepted: true,
  tunnelled: true,
  tcp: false,
  udp: false,
  'ip-tcp': false,
  'ip-udp': false,
};

/** Counts a status the proxy answered itself (an error, not relayed from upstream) to an HTTP request. */
export function countFailure(request: RequestState, status: number): void {
  if (!HTTP_KIND[request.kind]) return;
  httpMetrics.requests_failed_total({ endpoint: request.ingress.endpoint.name, status }).inc();
}

/** The ways a unit ends when a drain's deadline destroys its sockets (then: `drained`). */
const CUT: ReadonlySet<string> = new Set([
  'client_reset',
  'upstream_reset',
  'client_error',
  'upstream_error',
  'client_closed',
  'aborted',
]);

/**
 * Ends a request or tunnel: fires `handleRequestEnd`, logs a failure at DEBUG, and writes the
 * audit record (when audit is on). Call exactly once per request or tunnel.
 */
export function recordEnd(
  rt: Runtime,
  request: RequestState,
  bytesUp: number,
  bytesDown: number,
  closeReason: string,
  datagrams?: { readonly datagrams_up: number; readonly datagrams_down: number },
): void {
  if (rt.cutting && CUT.has(closeReason)) closeReason = 'drained';
  const hook = rt.hooks.requestEnd;
  if (hook !== null) {
    const info = endInfo(request, bytesUp, bytesDown, closeReason);
    // The end may come from a socket event in another context: the hook (and what it logs)
    // runs in the request's.
    const t = request.telemetry;
    if (t === null) runEndHook(rt, hook, info, request);
    else t.apply(() => runEndHook(rt, hook, info, request));
  }
  if (isFailure(closeReason) && log.enabled('DEBUG')) logFailure(request, closeReason);
  if (rt.audit.enabled) writeAudit(rt, request, bytesUp, bytesDown, closeReason, datagrams);
}

function runEndHook(
  rt: Runtime,
  hook: (info: RequestEndInfo, ctx: RequestState) => void,
  info: RequestEndInfo,
  request: RequestState,
): void {
  try {
    const r: unknown = hook(info, request);
    // An async hook's rejection is logged like a throw, not left unhandled.
    if (r instanceof Promise) r.catch((e: unknown) => rt.hookFailed('HttpRequestHook.handleRequestEnd', e));
  } catch (e) {
    rt.hookFailed('HttpRequestHook.handleRequestEnd', e);
  }
}

/** Close reasons that are failures: a block, an `OXY_ERR_*` code, an error either side. */
function isFailure(closeReason: string): boolean {
  return (
    closeReason === 'blocked' ||
    closeReason.startsWith('OXY_ERR_') ||
    closeReason === 'error' ||
    closeReason === 'upstream_error' ||
    closeReason === 'upstream_reset'
  );
}

/** The error of a request, from what its flow recorded or else from its close reason. */
function errorOf(request: RequestState, closeReason: string): RequestError | null {
  const e = request.error;
  if (isOxyError(e)) return { code: e.code, message: clientReason(e) };
  if (e instanceof Error) return { code: 'error', message: e.message };
  if (typeof e === 'string') return { code: closeReason, message: e };
  if (closeReason === 'blocked' || !isFailure(closeReason)) return null;
  return { code: closeReason, message: closeReason };
}

const ms = (from: number, to: number): number => Math.round((to - from) * 1000) / 1000;

/** When `request` ended: its `endedAt` when the addon reported it later, else now. */
export function endOf(request: RequestState): number {
  return request.endedAt === 0 ? performance.now() : request.endedAt;
}

/** The {@link RequestEndInfo} of a request that just ended. */
export function endInfo(
  request: RequestState,
  bytesUp: number,
  bytesDown: number,
  closeReason: string,
): RequestEndInfo {
  const start = request.startedAt;
  return {
    kind: request.kind,
    method: request.method,
    target: formatHostPort(request.target.host, request.target.port),
    status: request.status,
    upstream: request.upstream,
    upstreamReused: request.upstreamReused,
    bytesUp,
    bytesDown,
    durationMs: ms(start, endOf(request)),
    connectMs: request.connectedAt === 0 ? null : ms(start, request.connectedAt),
    firstByteMs: request.respondedAt === 0 ? null : ms(start, request.respondedAt),
    closeReason,
    error: errorOf(request, closeReason),
  };
}

/**
 * The DEBUG line of a failed request: what happened (refused, timed out, blocked) and who
 * decided (the hook decisions taken, e.g. `request:block`, `egress:block`).
 */
function logFailure(request: RequestState, closeReason: string): void {
  const err = errorOf(request, closeReason);
  const fields = {
    request_id: request.id,
    kind: request.kind,
    method: request.method,
    target: formatHostPort(request.target.host, request.target.port),
    status: request.status,
    close_reason: closeReason,
    blocked_by: blockedBy(request, closeReason),
    decisions: request.decisions.join(' '),
    upstream: request.upstream,
    err: err?.message,
  };
  const t = request.telemetry;
  if (t === null) log.debug('request failed', fields);
  else t.apply(() => log.debug('request failed', fields));
}

/** Who blocked a request: the hook decision that said `block`, or the blocklist. */
function blockedBy(request: RequestState, closeReason: string): string | undefined {
  const d = request.decisions.find((x) => x.endsWith(':block'));
  if (d !== undefined) return d.slice(0, d.indexOf(':'));
  if (closeReason === 'OXY_ERR_EGRESS_BLOCKED') return 'egress';
  if (closeReason === 'blocked' || closeReason === 'OXY_ERR_BLOCKED') return 'app';
  return undefined;
}

function writeAudit(
  rt: Runtime,
  request: RequestState,
  bytesUp: number,
  bytesDown: number,
  closeReason: string,
  datagrams: { readonly datagrams_up: number; readonly datagrams_down: number } | undefined,
): void {
  const conn = request.ingress;
  rt.audit.write({
    kind: RECORD_KIND[request.kind],
    request_kind: request.kind,
    conn_id: conn.id,
    request_id: request.id,
    endpoint: conn.endpoint.name,
    ...clientAndPeer(conn),
    target: formatAddr(request.target),
    upstream: request.upstream,
    decisions: request.decisions,
    status: request.status,
    bytes_up: bytesUp,
    bytes_down: bytesDown,
    duration_ms: ms(request.startedAt, endOf(request)),
    close_reason: closeReason,
    ...blockReason(request, closeReason),
    client_identity: auditIdentity(conn.clientIdentity),
    ...(request.parentId === null ? {} : { parent_request_id: request.parentId }),
    ...(request.upstreamProtocol === null ? {} : { upstream_protocol: request.upstreamProtocol }),
    ...datagrams,
    ...(conn.proxyHeader === null ? {} : { proxy_protocol: proxyHeaderView(conn.proxyHeader) }),
  });
}

/** A record's `client` and `peer` (the same text when there was no PROXY header). */
function clientAndPeer(conn: IngressConnection): { client: string; peer: string } {
  const client = formatAddr(conn.client);
  return {
    client,
    peer: conn.peer === conn.client ? client : formatAddr(conn.peer),
  };
}

/** The reason of a block (a hook's, or the blocklist's), as the record's `block_reason`. */
function blockReason(request: RequestState, closeReason: string): { block_reason?: string } {
  if (
    closeReason !== 'blocked' &&
    closeReason !== 'OXY_ERR_EGRESS_BLOCKED' &&
    closeReason !== 'OXY_ERR_BLOCKED'
  )
    return {};
  const e = request.error;
  if (typeof e === 'string') return { block_reason: e };
  if (e instanceof Error) return { block_reason: e.message };
  return {};
}

/**
 * The audit record of a connection the app refused before any request: `IngressHook` or
 * `ProxyProtocolHook` said block (`decision` `ingress:block`, `proxy_protocol:block`), or threw.
 */
export function auditRefusedConnection(
  rt: Runtime,
  conn: IngressConnection,
  decision: string,
  closeReason: string,
  reason: string | undefined,
): void {
  if (!rt.audit.enabled) return;
  rt.audit.write({
    kind: 'connection',
    conn_id: conn.id,
    request_id: '',
    endpoint: conn.endpoint.name,
    ...clientAndPeer(conn),
    target: '',
    upstream: null,
    decisions: [decision],
    status: 0,
    bytes_up: 0,
    bytes_down: 0,
    duration_ms: ms(conn.startedAt, performance.now()),
    close_reason: closeReason,
    ...(reason === undefined ? {} : { block_reason: reason }),
    client_identity: auditIdentity(conn.clientIdentity),
    ...(conn.proxyHeader === null ? {} : { proxy_protocol: proxyHeaderView(conn.proxyHeader) }),
  });
}

/** The body of an error the proxy answers itself: short, and without internals for hook failures. */
export function errorBody(status: number, message: string): string {
  return `${status} ${message}\n`;
}
