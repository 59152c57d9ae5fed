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
import { auditRefusedConnection } from '../flows/record.ts';
import { offloadedBytes } from '../flows/stream/offload.ts';
import type { IngressDecision } from '../hooks/ingress.ts';
import type { Runtime } from '../runtime.ts';
import { forkConnection, inConnectionContext } from '../telemetry/fork.ts';
import { ingressMetrics } from '../telemetry/metrics.ts';
import { type ReadProxyHeaderOptions, readProxyHeader } from './proxy-protocol/read.ts';

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
    const pp = endpoint.proxyProtocol;
    if (pp === null) decideIngress(rt, conn, socket, onramp, false);
    else readHeader(rt, conn, socket, onramp, pp);
  });
}

/**
 * An endpoint with `proxy_protocol.enabled`: the header first (trusted peer, timeout, any number
 * of reads), then `ProxyProtocolHook.handleConnection`, then the ingress decision, which thus
 * sees the header's source as `ctx.client`. Bytes after the header stay in the socket.
 */
function readHeader(
  rt: Runtime,
  conn: IngressConnection,
  socket: net.Socket,
  onramp: SocketOnRamp,
  options: ReadProxyHeaderOptions,
): void {
  readProxyHeader(socket, options).then(
    ({ header }) => {
      conn.setProxyHeader(header);
      const hook = rt.hooks.proxyProtocolConnection;
      if (hook === null) {
        decideIngress(rt, conn, socket, onramp, true);
        return;
      }
      let d: IngressDecision | Promise<IngressDecision>;
      try {
        d = hook(header, conn);
      } catch (e) {
        refuse(rt, conn, socket, e, 'ProxyProtocolHook.handleConnection');
        return;
      }
      const then = (decision: IngressDecision): void => {
        if (isBlock(rt, conn, socket, decision, 'proxy_protocol')) return;
        decideIngress(rt, conn, socket, onramp, true);
      };
      if (d instanceof Promise)
        d.then(then, (e: unknown) => refuse(rt, conn, socket, e, 'ProxyProtocolHook.handleConnection'));
      else then(d);
    },
    (e: unknown) => {
      // Already counted by reason and the socket destroyed by the reader.
      conn.closeReason = 'proxy_protocol';
      ingressMetrics
        .connections_failed_total({ endpoint: conn.endpoint.name, reason: 'proxy_protocol' })
        .inc();
      log.debug('PROXY header refused', {
        reason: (e as { reason?: string }).reason,
        err: (e as Error).message,
      });
    },
  );
}

/** `IngressHook.handleConnection`, then the on-ramp. `paused`: the socket was held paused before. */
function decideIngress(
  rt: Runtime,
  conn: IngressConnection,
  socket: net.Socket,
  onramp: SocketOnRamp,
  paused: boolean,
): void {
  const hook = rt.hooks.ingressConnection;
  if (hook === null) {
    serve(conn, socket, onramp, paused);
    return;
  }
  socket.pause();
  let decision: IngressDecision | Promise<IngressDecision>;
  try {
    decision = hook(conn);
  } catch (e) {
    refuse(rt, conn, socket, e, 'IngressHook.handleConnection');
    return;
  }
  const then = (d: IngressDecision): void => {
    if (isBlock(rt, conn, socket, d, 'ingress')) return;
    serve(conn, socket, onramp, true);
  };
  if (decision instanceof Promise)
    decision.then(then, (e: unknown) => refuse(rt, conn, socket, e, 'IngressHook.handleConnection'));
  else then(decision);
}

/** True (and the socket closed, the refusal audited) when `d`, `hook`'s decision, blocks the connection. */
function isBlock(
  rt: Runtime,
  conn: IngressConnection,
  socket: net.Socket,
  d: IngressDecision,
  hook: 'ingress' | 'proxy_protocol',
): boolean {
  if (d === undefined || d.kind !== 'block') return false;
  conn.closeReason = 'blocked';
  ingressMetrics.connections_failed_total({ endpoint: conn.endpoint.name, reason: 'blocked' }).inc();
  log.debug('connection blocked', { reason: d.reason, by: hook });
  auditRefusedConnection(rt, conn, `${hook}:block`, 'blocked', d.reason);
  socket.destroy();
  return true;
}

function serve(conn: IngressConnection, socket: net.Socket, onramp: SocketOnRamp, paused: boolean): void {
  if (socket.destroyed) return;
  onramp.serve(socket, conn);
  if (paused && onramp.startsReading !== true) socket.resume();
}

function refuse(rt: Runtime, conn: IngressConnection, socket: net.Socket, e: unknown, hook: string): void {
  rt.hookFailed(hook, e);
  conn.closeReason = 'OXY_ERR_HOOK_FAILED';
  ingressMetrics.connections_failed_total({ endpoint: conn.endpoint.name, reason: 'hook_failed' }).inc();
  const by = hook.startsWith('ProxyProtocolHook') ? 'proxy_protocol' : 'ingress';
  auditRefusedConnection(rt, conn, `${by}:failed`, 'OXY_ERR_HOOK_FAILED', undefined);
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
