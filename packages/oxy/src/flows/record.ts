/**
 * The end of a request or tunnel: its audit record and its failure metric, written in one
 * place so every on-ramp reports the same fields.
 */
import { type AuditRecord, auditIdentity } from '../audit.ts';
import { formatHostPort } from '../context/addr.ts';
import type { RequestKind } from '../context/contexts.ts';
import type { RequestState } from '../context/state.ts';
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
};

/** Counts a status the proxy answered itself (an error, not relayed from upstream). */
export function countFailure(request: RequestState, status: number): void {
  httpMetrics.requests_failed_total({ endpoint: request.ingress.endpoint.name, status }).inc();
}

/** Writes the audit record of a finished request or tunnel (when audit is on). */
export function recordEnd(
  rt: Runtime,
  request: RequestState,
  bytesUp: number,
  bytesDown: number,
  closeReason: string,
  datagrams?: { readonly datagrams_up: number; readonly datagrams_down: number },
): void {
  if (!rt.audit.enabled) return;
  const conn = request.ingress;
  const client = formatHostPort(conn.client.host, conn.client.port);
  rt.audit.write({
    kind: RECORD_KIND[request.kind],
    request_kind: request.kind,
    conn_id: conn.id,
    request_id: request.id,
    endpoint: conn.endpoint.name,
    client,
    peer: conn.peer === conn.client ? client : formatHostPort(conn.peer.host, conn.peer.port),
    target: formatHostPort(request.target.host, request.target.port),
    upstream: request.upstream,
    decisions: request.decisions,
    status: request.status,
    bytes_up: bytesUp,
    bytes_down: bytesDown,
    duration_ms: Math.round((performance.now() - request.startedAt) * 1000) / 1000,
    close_reason: closeReason,
    client_identity: auditIdentity(conn.clientIdentity),
    ...datagrams,
    ...(conn.proxyHeader === null ? {} : { proxy_protocol: proxyHeaderView(conn.proxyHeader) }),
  });
}

/** The body of an error the proxy answers itself: short, and without internals for hook failures. */
export function errorBody(status: number, message: string): string {
  return `${status} ${message}\n`;
}
