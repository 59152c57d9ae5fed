/**
 * The end of a request or tunnel: its audit record and its failure metric, written in one
 * place so every on-ramp reports the same fields.
 */
import { auditIdentity } from '../audit.ts';
import { formatHostPort } from '../context/addr.ts';
import type { RequestState } from '../context/state.ts';
import type { Runtime } from '../runtime.ts';
import { httpMetrics } from '../telemetry/metrics.ts';

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
): void {
  if (!rt.audit.enabled) return;
  const conn = request.ingress;
  rt.audit.write({
    kind: request.kind === 'forward' ? 'request' : 'tunnel',
    conn_id: conn.id,
    request_id: request.id,
    endpoint: conn.endpoint.name,
    client: formatHostPort(conn.client.host, conn.client.port),
    target: formatHostPort(request.target.host, request.target.port),
    upstream: request.upstream,
    decisions: request.decisions,
    status: request.status,
    bytes_up: bytesUp,
    bytes_down: bytesDown,
    duration_ms: Math.round((performance.now() - request.startedAt) * 1000) / 1000,
    close_reason: closeReason,
    client_identity: auditIdentity(conn.clientIdentity),
  });
}

/** The body of an error the proxy answers itself: short, and without internals for hook failures. */
export function errorBody(status: number, message: string): string {
  return `${status} ${message}\n`;
}
