/**
 * Accepting a client connection, for every on-ramp that starts from a socket: build the
 * ingress context (and its `ext`), fork telemetry, count it, ask `IngressHook.handleConnection`
 * and, if allowed, hand the socket to the on-ramp. When the socket closes, report the
 * statistics to `IngressHook.handleConnectionClose` exactly once.
 *
 * Ordering rule: no byte is read from the socket before the ingress decision: with an async
 * hook the socket stays paused until it answers.
 */
import type net from 'node:net';
import { log } from 'foundations/telemetry';
import type { IngressProtocol } from '../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../context/state.ts';
import type { IngressDecision } from '../hooks/ingress.ts';
import type { Runtime } from '../runtime.ts';
import { forkConnection } from '../telemetry/fork.ts';
import { ingressMetrics } from '../telemetry/metrics.ts';

/** An on-ramp that serves connections handed to it after the ingress decision. */
export interface SocketOnRamp {
  readonly protocol: IngressProtocol;
  /** Serves `socket` (already allowed); called inside the connection's telemetry context. */
  serve(socket: net.Socket, conn: IngressConnection): void;
}

/** Accepts `socket` on `endpoint` for `onramp`. Never throws. */
export function acceptConnection(
  rt: Runtime,
  endpoint: EndpointState,
  socket: net.Socket,
  onramp: SocketOnRamp,
): void {
  const conn = new IngressConnection(endpoint, socket, onramp.protocol, rt.ext);
  rt.connections.add(conn);
  const labels = { endpoint: endpoint.name };
  ingressMetrics.connections_total(labels).inc();
  ingressMetrics.connections_active(labels).inc();
  forkConnection(conn, () => {
    socket.once('close', () => closed(rt, conn));
    const hook = rt.hooks.ingressConnection;
    if (hook === null) {
      onramp.serve(socket, conn);
      return;
    }
    socket.pause();
    let decision: IngressDecision | Promise<IngressDecision>;
    try {
      decision = hook(conn);
    } catch (e) {
      refuse(rt, conn, socket, e);
      return;
    }
    if (decision instanceof Promise) {
      decision.then(
        (d) => decide(conn, socket, onramp, d),
        (e: unknown) => refuse(rt, conn, socket, e),
      );
    } else decide(conn, socket, onramp, decision);
  });
}

function decide(conn: IngressConnection, socket: net.Socket, onramp: SocketOnRamp, d: IngressDecision): void {
  if (d !== undefined && d.kind === 'block') {
    conn.closeReason = 'blocked';
    ingressMetrics.connections_failed_total({ endpoint: conn.endpoint.name, reason: 'blocked' }).inc();
    log.debug('connection blocked', { reason: d.reason });
    socket.destroy();
    return;
  }
  if (socket.destroyed) return;
  onramp.serve(socket, conn);
  socket.resume();
}

function refuse(rt: Runtime, conn: IngressConnection, socket: net.Socket, e: unknown): void {
  rt.hookFailed('IngressHook.handleConnection', e);
  conn.closeReason = 'OXY_ERR_HOOK_FAILED';
  ingressMetrics.connections_failed_total({ endpoint: conn.endpoint.name, reason: 'hook_failed' }).inc();
  socket.destroy();
}

function closed(rt: Runtime, conn: IngressConnection): void {
  if (conn.closed) return;
  conn.closed = true;
  rt.connections.delete(conn);
  ingressMetrics.connections_active({ endpoint: conn.endpoint.name }).dec();
  const hook = rt.hooks.ingressConnectionClose;
  if (hook === null) return;
  const stats = {
    bytesIn: conn.socket.bytesRead,
    bytesOut: conn.socket.bytesWritten,
    durationMs: performance.now() - conn.startedAt,
    requests: conn.requests,
    closeReason: conn.closeReason,
  };
  try {
    hook(stats, conn);
  } catch (e) {
    rt.hookFailed('IngressHook.handleConnectionClose', e);
  }
}
