/**
 * A connection the addon's reactor thread accepted, as JS takes it on and lets it go: the one
 * setup and end that both reactor listeners share (`reactor-accept.ts` for a `tcp` endpoint's
 * adopted tunnel, `../http1/reactor-connect.ts` for a CONNECT JS decides). Node's accept path
 * does the same for its sockets in the on-ramps; here the connection started on the reactor
 * thread, so its start time is the accept's, not now.
 *
 * Ordering: the context is in `rt.connections` and counted before any hook or fork runs for it;
 * the end takes it out, and its restart task ends last.
 */
import type { TaskToken, TaskTracker } from 'foundations/restart';
import type { IngressProtocol, SocketAddr } from '../../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../../context/state.ts';
import type { Runtime } from '../../runtime.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';

/**
 * A connection the reactor thread accepted `sinceAccept` ms ago, taken on by JS to run on: its
 * context, started at the accept,
 * in `rt.connections`, counted by the ingress metrics and, while the restart tracker is open,
 * by a task of its own (the returned token; null once it closed). {@link endAccepted} undoes it.
 */
export function takeAccepted(
  rt: Runtime,
  endpoint: EndpointState,
  addrs: { readonly peer: SocketAddr; readonly local: SocketAddr },
  protocol: IngressProtocol,
  sinceAccept: number,
  labels: { readonly endpoint: string },
  tracker: TaskTracker | null,
): { readonly conn: IngressConnection; readonly token: TaskToken | null } {
  const conn = new IngressConnection(endpoint, addrs, protocol, rt.ext);
  (conn as { startedAt: number }).startedAt = performance.now() - sinceAccept;
  rt.connections.add(conn);
  ingressMetrics.connections_total(labels).inc();
  ingressMetrics.connections_active(labels).inc();
  return { conn, token: tracker === null || tracker.closed ? null : tracker.start() };
}

/** The end of a connection {@link takeAccepted} took on: closed, out of the set, the gauge and its task. */
export function endAccepted(
  rt: Runtime,
  conn: IngressConnection,
  labels: { readonly endpoint: string },
  token: TaskToken | null,
): void {
  conn.closed = true;
  rt.connections.delete(conn);
  ingressMetrics.connections_active(labels).dec();
  token?.done();
}
