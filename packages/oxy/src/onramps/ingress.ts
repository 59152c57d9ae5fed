/**
 * Accepting a client connection, for every on-ramp that starts from a socket: build the
 * ingress context (and its `ext`), fork telemetry, count it, ask `IngressHook.handleConnection`
 * and, if allowed, hand the socket to the on-ramp. When the socket closes, report the
 * statistics to `IngressHook.handleConnectionClose` exactly once, in the connection's telemetry
 * context. The statistics are the socket's own counters, so a path that moves bytes past Node
 * (the kernel splice) tops them up before it lets the socket close.
 *
 * Memory: a connection costs no closure here: the 'close' listener is one shared function that
 * finds the connection through two properties on the socket (an idle tunnel keeps its socket
 * object for its whole life, so whatever hangs off it counts).
 *
 * Ordering rule: no byte is read from the socket before the ingress decision: with an async
 * hook the socket stays paused until it answers.
 */
import type net from 'node:net';
import { log } from 'foundations/telemetry';
import type { ConnectionStats, IngressProtocol } from '../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../context/state.ts';
import { offloadedBytes } from '../flows/stream/offload.ts';
import type { IngressDecision } from '../hooks/ingress.ts';
import type { Runtime } from '../runtime.ts';
import { forkConnection, inConnectionContext } from '../telemetry/fork.ts';
import { ingressMetrics } from '../telemetry/metrics.ts';

const kConn = Symbol('oxy.ingressConnection');
const kRuntime = Symbol('oxy.ingressRuntime');

/** An accepted socket, tagged with what its close accounting needs. */
type TaggedSocket = net.Socket & { [kConn]?: IngressConnection; [kRuntime]?: Runtime };

/** The shared 'close' listener of accepted sockets (`this` is the socket). */
function onSocketClose(this: TaggedSocket): void {
  const conn = this[kConn];
  const rt = this[kRuntime];
  if (conn !== undefined && rt !== undefined) closed(rt, conn);
}

/** An on-ramp that serves connections handed to it after the ingress decision. */
export interface SocketOnRamp {
  readonly protocol: IngressProtocol;
  /** Serves `socket` (already allowed); called inside the connection's telemetry context. */
  serve(socket: net.Socket, conn: IngressConnection): void;
  /**
   * True when `serve` decides itself when the socket starts flowing (a `tcp` endpoint reads
   * nothing before its upstream is connected). Otherwise a socket held paused for an async
   * ingress decision is resumed right after `serve`.
   */
  readonly startsReading?: boolean;
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
  const tagged = socket as TaggedSocket;
  tagged[kConn] = conn;
  tagged[kRuntime] = rt;
  socket.on('close', onSocketClose);
  forkConnection(conn, () => {
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
  if (onramp.startsReading !== true) socket.resume();
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
  const socket = conn.socket as net.Socket; // accepted connections have one
  const stats = {
    bytesIn: socket.bytesRead,
    bytesOut: socket.bytesWritten + offloadedBytes(socket),
    durationMs: performance.now() - conn.startedAt,
    requests: conn.requests,
    closeReason: conn.closeReason,
  };
  // 'close' comes from wherever the socket was destroyed (a shared timer, another connection's
  // drain): the hook runs in its own connection's context.
  inConnectionContext(conn, () => runCloseHook(rt, hook, stats, conn));
}

function runCloseHook(
  rt: Runtime,
  hook: (stats: ConnectionStats, ctx: IngressConnection) => void,
  stats: ConnectionStats,
  conn: IngressConnection,
): void {
  try {
    hook(stats, conn);
  } catch (e) {
    rt.hookFailed('IngressHook.handleConnectionClose', e);
  }
}
