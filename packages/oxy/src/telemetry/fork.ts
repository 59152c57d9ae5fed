/**
 * Telemetry forks for connections and requests: each accepted connection gets its own log
 * fields (`conn_id`, `endpoint`, `client`) and trace; each request on it forks again (fields
 * plus `request_id`) into a new trace linked to the connection's, so a long keep-alive or
 * HTTP/2 connection does not become one giant trace.
 *
 * Ordering rule: the fork is made before any hook runs, so hook logs carry the fields.
 *
 * Cost: the fields are computed (and the client address formatted) only when a record is
 * written or something reads them, and the new trace's ids are drawn only when read (see
 * `TelemetryContext.fork`): a tunnel that logs nothing pays for two small objects per fork.
 */
import { TelemetryContext } from 'foundations/telemetry';
import type { IngressConnection, RequestState } from '../context/state.ts';

/** Runs `fn` in a new telemetry context for `conn`, kept on `conn.telemetry`. */
export function forkConnection<T>(conn: IngressConnection, fn: () => T): T {
  const ctx = TelemetryContext.current().fork('connection', conn);
  return ctx.apply(() => {
    conn.telemetry = TelemetryContext.current();
    return fn();
  });
}

/**
 * Runs `fn` in `conn`'s telemetry context (or as it is, before the connection has one): for
 * work started from a socket event, which runs in the listener's context, not the connection's.
 */
export function inConnectionContext(conn: IngressConnection, fn: () => void): void {
  const t = conn.telemetry;
  if (t === null) fn();
  else t.apply(fn);
}

/** Runs `fn` in a request context forked from its connection's, kept on `request.telemetry`. */
export function forkRequest<T>(request: RequestState, fn: () => T): T {
  const base = request.ingress.telemetry ?? TelemetryContext.current();
  const ctx = base.fork(request.kind === 'connect' ? 'connect' : 'request', request);
  return ctx.apply(() => {
    request.telemetry = TelemetryContext.current();
    return fn();
  });
}
