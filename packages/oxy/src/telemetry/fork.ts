/**
 * Telemetry forks for connections and requests: each accepted connection gets its own log
 * fields (`conn_id`, `endpoint`, `client`) and trace; each request on it forks again (fields
 * plus `request_id`) into a new trace linked to the connection's, so a long keep-alive or
 * HTTP/2 connection does not become one giant trace.
 *
 * Ordering rule: the fork is made before any hook runs, so hook logs carry the fields.
 */
import { TelemetryContext } from 'foundations/telemetry';
import { formatHostPort } from '../context/addr.ts';
import type { IngressConnection, RequestState } from '../context/state.ts';

/** Runs `fn` in a new telemetry context for `conn`, kept on `conn.telemetry`. */
export function forkConnection<T>(conn: IngressConnection, fn: () => T): T {
  const ctx = TelemetryContext.current().withForkedLog().withForkedTrace('connection');
  ctx.addFields({
    conn_id: conn.id,
    endpoint: conn.endpoint.name,
    client: formatHostPort(conn.client.host, conn.client.port),
  });
  return ctx.apply(() => {
    conn.telemetry = TelemetryContext.current();
    return fn();
  });
}

/** Runs `fn` in a request context forked from its connection's, kept on `request.telemetry`. */
export function forkRequest<T>(request: RequestState, fn: () => T): T {
  const base = request.ingress.telemetry ?? TelemetryContext.current();
  const ctx = base.withForkedLog().withForkedTrace(request.kind === 'connect' ? 'connect' : 'request');
  ctx.addFields({ request_id: request.id });
  return ctx.apply(() => {
    request.telemetry = TelemetryContext.current();
    return fn();
  });
}
