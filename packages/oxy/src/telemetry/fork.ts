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

/**
 * {@link forkRequest} for a request that lives as long as the promise `fn` returns, with `end`
 * run once it settles (a rejection, or a throw of `fn`, is passed on after `end`): `.finally`'s work, on as few
 * continuations as the telemetry allows, for what idle tunnels keep waiting. When the request's
 * span is recorded, the fork's `apply` waits for the promise to end the span, in the fork's
 * context; when none is (no exporter, not sampled), nothing waits there, and `end` rides on the
 * promise itself, in the request's context.
 */
export function forkRequestUntil(
  request: RequestState,
  fn: () => Promise<void>,
  end: () => void,
): Promise<void> {
  const failed = rethrowAfter(end);
  let served: Promise<void> | null = null;
  const spanned = forkRequest(request, (): Promise<void> | undefined => {
    let p: Promise<void>;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e); // thrown before its promise: ended the same way
    }
    if (TelemetryContext.current().span !== null) return p; // `apply` ends the span with it
    served = p.then(end, failed);
    return undefined;
  });
  return spanned === undefined ? (served as unknown as Promise<void>) : spanned.then(end, failed);
}

/**
 * `end`, then the error again: made apart from {@link forkRequestUntil}'s scope, so that what an
 * idle tunnel keeps waiting is `end` and this, not that call's whole context.
 */
function rethrowAfter(end: () => void): (e: unknown) => never {
  return (e) => {
    end();
    throw e;
  };
}
