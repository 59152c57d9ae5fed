/**
 * The stream runner: the one pipeline every byte-stream unit goes through, whatever on-ramp
 * produced it: a CONNECT tunnel (HTTP/1.1 or HTTP/2), an `Upgrade`, a `tcp` endpoint's
 * connection (with or without a PROXY protocol header), and later MASQUE and upgraded IP flows.
 * An on-ramp wraps its client side in a {@link StreamIngress} (how to answer, how to refuse) and
 * calls {@link runStream}; an on-ramp that connected upstream itself (an Upgrade, which must
 * see the 101 first) calls {@link carryStream}.
 *
 * Order: egress route (decision → DNS → `handleUpstreamIps` → `blocked_cidrs`) → connect (the
 * addon's whole tunnel when the fast-path plan and the route allow, otherwise Happy Eyeballs,
 * the override or the upstream proxy, then `handleConnectionEstablished`) → the on-ramp's
 * answer (a CONNECT's `handleProxyConnectResponse` and 2xx) → (a CONNECT, with
 * `TunnelHook.handleTunnelStart` or `interception.enabled`: its first bytes and the tunnel
 * decision, `tunnels/inspect.ts`) → `getAppTunnelPipeline` → the
 * app's pipeline, the kernel splice (plain TCP both sides) or the JS pump → metrics and exactly
 * one audit record, however the unit ends. A client that leaves while a JS connect is under way
 * ({@link StreamIngress.clientStream} closes) aborts it: the unit ends then, as `client_closed`.
 */
import type { Duplex } from 'node:stream';
import { log } from 'foundations/telemetry';
import { formatHostPort } from '../../context/addr.ts';
import { EgressState, type RequestState } from '../../context/state.ts';
import { untilAborted } from '../../egress/abort.ts';
import { connectStream, type EgressRoute, proxyHeaderFor, routeEgress } from '../../egress/connect.ts';
import {
  canRunWhole,
  connectWholeTunnel,
  type SpliceableClient,
  wholeTunnelAddress,
  wholeTunnelFailure,
} from '../../egress/whole-tunnel.ts';
import { clientReason, httpStatusFor, isOxyError, OXY_ERR } from '../../errors.ts';
import type { AppTunnelPipeline } from '../../hooks/tunnel.ts';
import type { Runtime } from '../../runtime.ts';
import { tunnelMetrics } from '../../telemetry/metrics.ts';
import { connectsLate, inspectsTunnels, inspectTunnel, TunnelUpstream } from '../../tunnels/inspect.ts';
import { countFailure, endOf, recordEnd } from '../record.ts';
import { runAppPipeline } from './app-pipeline.ts';
import { StreamPump } from './pump.ts';
import { canSplice, spliceTunnel } from './splice.ts';

export type { SpliceableClient } from '../../egress/whole-tunnel.ts';

/** Why an on-ramp refused to answer after the upstream connected. */
export interface StreamRefusal {
  readonly status: number;
  readonly reason: string;
  /** The audit record's close reason. */
  readonly why: string;
}

/** The client side of a stream unit, as its on-ramp presents it to the runner. */
export interface StreamIngress {
  /** True once the client went away (the unit is abandoned). */
  readonly closed: boolean;
  /**
   * Called once the upstream connected: answers the client (a CONNECT's 2xx; nothing for a raw
   * TCP connection) and returns the stream of the client's bytes, or a refusal, which the runner
   * then answers through `reject`. Called at most once.
   */
  accept(): Duplex | StreamRefusal | Promise<Duplex | StreamRefusal>;
  /** Tells the client the unit failed (`status` in HTTP terms) and ends its side. */
  reject(status: number, reason: string): void;
  /**
   * The client for the addon's whole tunnel, or null when it cannot take it (TLS, an HTTP/2
   * stream, writes still queued). The addon then writes `head` itself: `accept` is not called.
   */
  spliceable?(): SpliceableClient | null;
  /**
   * The client's stream, watched while the upstream connects: its 'close' (a reset or an error
   * on the client's socket, an HTTP/2 stream reset or its session gone) says the client left,
   * and aborts the connect. A FIN closes nothing: it is a half-close, carried once connected.
   * Absent or null: nothing to watch (the connect then runs to its end or `connect_timeout`).
   */
  clientStream?(): Duplex | null;
}

function isRefusal(v: Duplex | StreamRefusal): v is StreamRefusal {
  return typeof (v as StreamRefusal).status === 'number' && typeof (v as Duplex).pipe !== 'function';
}

/** Refuses a unit: the status is counted, answered (unless the client left) and recorded. */
export function refuseStream(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  status: number,
  reason: string,
  why: string,
): void {
  request.status = status;
  countFailure(request, status);
  if (!ingress.closed) ingress.reject(status, reason);
  // A `tcp` endpoint's connection is this unit: the proxy closed it, for this reason (what
  // `IngressHook.handleConnectionClose` is told), not the client.
  const conn = request.ingress;
  if (conn.protocol === 'tcp' && conn.closeReason === 'client_closed') conn.closeReason = why;
  recordEnd(rt, request, 0, 0, why);
}

function refuseWith(rt: Runtime, request: RequestState, ingress: StreamIngress, e: unknown): void {
  if (request.error === null) request.error = e; // the record's error and block reason
  refuseStream(rt, request, ingress, httpStatusFor(e), clientReason(e), isOxyError(e) ? e.code : 'error');
}

/**
 * Runs one stream unit from the egress route to the end of its bytes. `request` is the unit's
 * context (its target is where the client asked to go). Never throws.
 *
 * The route's steps run synchronously when none of them waits (a literal or cached target, no
 * egress hook): then no async frame is made before the connector's own promise, which keeps a
 * short tunnel's garbage down (the order of every step is the same either way).
 */
export function runStream(rt: Runtime, request: RequestState, ingress: StreamIngress): Promise<void> {
  try {
    const eg = new EgressState(request.ingress, request, request.target, rt.ext);
    let r: EgressRoute | Promise<EgressRoute>;
    try {
      r = routeEgress(rt, eg, request.decisions, 'tcp');
    } catch (e) {
      refuseWith(rt, request, ingress, e);
      return DONE;
    }
    if (r instanceof Promise) return routed(rt, request, ingress, eg, r);
    return connectRoute(rt, request, ingress, eg, r);
  } catch (e) {
    // A fault of Oxy's own before anything was connected: this unit is refused and recorded
    // (its error in the record), never a rejection that nobody awaits, which ends the process.
    log.error('stream unit failed', { err: e });
    refuseWith(rt, request, ingress, e);
    return DONE;
  }
}

/** A settled promise: what a unit that ended synchronously returns. */
const DONE: Promise<void> = Promise.resolve();

async function routed(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  eg: EgressState,
  pending: Promise<EgressRoute>,
): Promise<void> {
  // A client that leaves while the hooks decide or DNS answers ends the unit at once; what
  // they decide later is dropped (no socket is made before the route).
  const route = await watchedStep(rt, request, ingress, (signal) =>
    signal === undefined ? pending : untilAborted(pending, signal),
  );
  if (route === null) return;
  return connectRoute(rt, request, ingress, eg, route);
}

/** After the route: the addon's whole tunnel, or a connector in JS. */
function connectRoute(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  eg: EgressState,
  route: EgressRoute,
): Promise<void> {
  if (ingress.closed) {
    recordEnd(rt, request, 0, 0, 'client_closed');
    return DONE;
  }
  const whole = wholeClient(rt, request, ingress, route);
  if (whole !== null) return runWhole(rt, request, ingress, eg, route, whole);
  if (connectsLate(rt, request, eg, route)) return runLate(rt, request, ingress, eg, route);
  return runConnected(rt, request, ingress, eg, route);
}

/**
 * An intercepted tunnel the pool will serve (`lateTunnelConnect`): answered now, connected
 * only if its first bytes say it needs a connection of its own.
 */
async function runLate(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  eg: EgressState,
  route: EgressRoute,
): Promise<void> {
  const client = await answer(rt, request, ingress, null);
  if (client === null) return;
  const upstream = TunnelUpstream.late(async () => {
    const conn = await connectStream(rt, eg, route);
    request.upstream = formatHostPort(conn.remote.host, conn.remote.port);
    return conn;
  });
  return inspectTunnel(rt, request, eg, route, client, upstream);
}

/**
 * The on-ramp's answer (a CONNECT's 2xx): the client's stream, or null when it was refused (or
 * the client left), recorded, and `upstream` closed.
 */
async function answer(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  upstream: Duplex | null,
): Promise<Duplex | null> {
  let answered: Duplex | StreamRefusal;
  try {
    const a = ingress.accept();
    answered = a instanceof Promise ? await a : a;
  } catch (e) {
    upstream?.destroy();
    refuseWith(rt, request, ingress, e);
    return null;
  }
  if (!isRefusal(answered)) {
    // An on-ramp that answers nothing (a `tcp` endpoint) has its tunnel established now.
    if (request.status === 0) request.status = 200;
    return answered;
  }
  upstream?.destroy();
  if (ingress.closed) recordEnd(rt, request, 0, 0, 'client_closed');
  else refuseStream(rt, request, ingress, answered.status, answered.reason, answered.why);
  return null;
}

async function runConnected(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  eg: EgressState,
  route: EgressRoute,
): Promise<void> {
  const upstream = await watchedStep(rt, request, ingress, (signal) => connectStream(rt, eg, route, signal));
  if (upstream === null) return;
  request.upstream = formatHostPort(upstream.remote.host, upstream.remote.port);
  if (ingress.closed) {
    upstream.socket.destroy();
    recordEnd(rt, request, 0, 0, 'client_closed');
    return;
  }
  const answered = await answer(rt, request, ingress, upstream.socket);
  if (answered === null) return;
  if (upstream.head !== null) answered.write(upstream.head);
  // A tunnel's first bytes decide how it runs (intercept, HTTP, pass through, close) when a
  // hook or `interception.enabled` asks (`tunnels/inspect.ts`).
  if (inspectsTunnels(rt, request.kind))
    return inspectTunnel(rt, request, eg, route, answered, TunnelUpstream.connected(upstream));
  // Returned, not awaited: this frame (route, exchange, egress result) is released while the
  // tunnel runs; an idle tunnel keeps only what the carry needs.
  // Bytes read with an upstream proxy's 2xx were written above: they count as carried.
  return carryStream(rt, request, eg, answered, upstream.socket, upstream.head?.length ?? 0);
}

/**
 * A step before the upstream is connected (the route, the connect), given a signal that aborts
 * when the client leaves. Null when it failed: the unit is then recorded as a client that left
 * (aborted, or failed as it left: nobody to answer, no upstream), or refused with the error.
 */
async function watchedStep<T>(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  step: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T | null> {
  const watch = watchClient(ingress);
  try {
    return await step(watch?.signal);
  } catch (e) {
    if (ingress.closed) recordEnd(rt, request, 0, 0, 'client_closed');
    else refuseWith(rt, request, ingress, e);
    return null;
  } finally {
    watch?.stop();
  }
}

/** A signal aborted when the client's stream closes, until `stop`. */
interface ClientWatch {
  readonly signal: AbortSignal;
  stop(): void;
}

/**
 * Watches the client while the upstream connects ({@link StreamIngress.clientStream}), so a
 * client that leaves ends the unit at once instead of holding an upstream connect (and its
 * socket) until `connect_timeout`. Null when the on-ramp has nothing to watch.
 */
function watchClient(ingress: StreamIngress): ClientWatch | null {
  const client = ingress.clientStream?.() ?? null;
  if (client === null) return null;
  const controller = new AbortController();
  const left = (): void => controller.abort();
  if (client.destroyed) left();
  else client.on('close', left);
  return { signal: controller.signal, stop: () => client.off('close', left) };
}

/** The client for the addon's whole tunnel, when the plan, the route and the client allow it. */
function wholeClient(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  route: EgressRoute,
): SpliceableClient | null {
  if (!rt.fast.wholeTunnel || ingress.spliceable === undefined) return null;
  if (!request.ingress.endpoint.stream.splice || wholeTunnelAddress(route) === null) return null;
  const client = ingress.spliceable();
  return client !== null && canRunWhole(client) ? client : null;
}

/**
 * `formatHostPort(ip, port)` of the whole tunnels' upstreams, made once: an idle tunnel to the
 * same upstream as many others keeps no text of its own. Bounded: emptied when full.
 */
const upstreams = new Map<string, Map<number, string>>();
const MAX_UPSTREAMS = 1024;
let upstreamCount = 0;

function upstreamText(ip: string, port: number): string {
  let byPort = upstreams.get(ip);
  let text = byPort?.get(port);
  if (text !== undefined) return text;
  text = formatHostPort(ip, port);
  if (upstreamCount >= MAX_UPSTREAMS) {
    upstreams.clear();
    upstreamCount = 0;
    byPort = undefined;
  }
  if (byPort === undefined) {
    byPort = new Map();
    upstreams.set(ip, byPort);
  }
  byPort.set(port, text);
  upstreamCount++;
  return text;
}

function runWhole(
  rt: Runtime,
  request: RequestState,
  ingress: StreamIngress,
  eg: EgressState,
  route: EgressRoute,
  client: SpliceableClient,
): Promise<void> {
  const ip = wholeTunnelAddress(route) as string;
  const direct = route as Extract<EgressRoute, { kind: 'direct' }>;
  const port = direct.port;
  request.upstream = upstreamText(ip, port);
  // The off-ramp's PROXY header goes up before anything the client sent. It is Oxy's, not the
  // client's: not counted in bytes_up, as on the JS paths.
  let own = 0;
  if (direct.proxyHeader !== undefined) {
    const head = proxyHeaderFor(eg, direct.proxyHeader);
    own = head.length;
    client = { ...client, early: client.early === null ? head : Buffer.concat([head, client.early]) };
  }
  // One continuation per tunnel, this one: an idle tunnel waits on nothing else here.
  return connectWholeTunnel(rt, eg, ip, port, client, request).then((r) => {
    if (r.connectError !== null) {
      request.upstream = null; // nothing was connected to: as the JS connectors record it
      refuseWith(rt, request, ingress, wholeTunnelFailure(rt, ip, port, r.connectError));
    } else finishWholeTunnel(rt, request, Math.max(0, r.bytesUp - own), r.bytesDown, r.reason);
  });
}

/**
 * Reports the end of a whole tunnel (the addon's connect and splice) as {@link finishStream} does.
 * One whose client's socket failed (a reset, seen by the reactor thread) before its connect
 * completed (no 2xx yet) is a client that left during the connect: recorded as the JS connectors
 * record it (`client_closed`, no upstream, nothing carried). A drain's cut is `client_reset`,
 * not this.
 */
export function finishWholeTunnel(
  rt: Runtime,
  request: RequestState,
  up: number,
  down: number,
  reason: string,
): void {
  if (reason === 'client_error' && request.status !== 200) {
    request.upstream = null;
    recordEnd(rt, request, 0, 0, 'client_closed');
  } else finishStream(rt, request, up, down, reason);
}

/**
 * Carries a connected unit's bytes until it ends, then reports it: the app's pipeline when
 * `getAppTunnelPipeline` returns one, otherwise the kernel splice (plain TCP both sides,
 * splicing on) or the JS pump. `headBytes` and `earlyUp`: bytes the caller already wrote
 * downstream and upstream, counted as carried. Never throws.
 */
export async function carryStream(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  client: Duplex,
  upstream: Duplex,
  headBytes = 0,
  earlyUp = 0,
): Promise<void> {
  const pipelineHook = rt.hooks.appTunnelPipeline;
  if (pipelineHook !== null) {
    let pipeline: AppTunnelPipeline | undefined;
    try {
      pipeline = await pipelineHook(request, eg);
    } catch (e) {
      rt.hookFailed('TunnelHook.getAppTunnelPipeline', e);
      client.destroy();
      upstream.destroy();
      finishStream(rt, request, 0, 0, OXY_ERR.HOOK_FAILED);
      return;
    }
    if (pipeline !== undefined)
      return runPipeline(rt, request, pipeline, client, upstream, headBytes, earlyUp);
  }
  const opts = request.ingress.endpoint.stream;
  // Nothing inspects these bytes: move them in the kernel when both sides are plain TCP. The
  // splice adds its byte counts to the sockets' counters, so the connection-close hook still
  // sees them.
  const r =
    opts.splice && canSplice(client, upstream)
      ? await spliceTunnel(client, upstream, opts)
      : await new StreamPump(client, upstream, opts).done;
  finishStream(rt, request, r.bytesUp + earlyUp, r.bytesDown + headBytes, r.reason);
}

async function runPipeline(
  rt: Runtime,
  request: RequestState,
  pipeline: AppTunnelPipeline,
  client: Duplex,
  upstream: Duplex,
  headBytes: number,
  earlyUp: number,
): Promise<void> {
  request.decisions.push('tunnel:app');
  const r = await runAppPipeline(pipeline, client, upstream, request.ingress.endpoint.stream);
  if (r.reason === OXY_ERR.HOOK_FAILED) rt.hookFailed('TunnelHook.getAppTunnelPipeline', r.thrown);
  finishStream(rt, request, r.bytesUp + earlyUp, r.bytesDown + headBytes, r.reason);
}

/** The end of a carried unit: tunnel metrics and its one audit record. */
export function finishStream(
  rt: Runtime,
  request: RequestState,
  up: number,
  down: number,
  reason: string,
): void {
  const endpoint = request.ingress.endpoint.name;
  const kind = request.kind;
  tunnelMetrics.bytes_total({ endpoint, kind, direction: 'up' }).inc(up);
  tunnelMetrics.bytes_total({ endpoint, kind, direction: 'down' }).inc(down);
  tunnelMetrics.duration_seconds({ endpoint, kind }).observe((endOf(request) - request.startedAt) / 1000);
  recordEnd(rt, request, up, down, reason);
}
