/**
 * CONNECT tunnels, whatever the HTTP version: an on-ramp wraps its CONNECT in a
 * `ConnectExchange` (the request head, a way to accept with a 2xx head and get the tunnel's
 * byte stream, a way to refuse), and this module runs the hooks, the egress pipeline and the
 * stream pipeline. HTTP/1.1 hands over the socket itself; an HTTP/2 CONNECT stream is a Duplex
 * too, so both drive this same code.
 *
 * Order: `handleProxyConnectRequest` → egress (decision, DNS, IPs, blocklist, connect,
 * `handleConnectionEstablished`) → `handleProxyConnectResponse` → 2xx sent →
 * `getAppTunnelPipeline` → the app's pipeline, the kernel splice (plain TCP both sides, nothing
 * inspecting) or the pump → audit record and metrics.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../context/contexts.ts';
import { EgressState, type IngressConnection, RequestState } from '../context/state.ts';
import { addressesFor, connectTunnelEgress } from '../egress/connect.ts';
import { httpStatusFor, isOxyError } from '../errors.ts';
import { reasonOf } from '../flows/http/lean-forward.ts';
import { countFailure, recordEnd } from '../flows/record.ts';
import { StreamPump } from '../flows/stream/pump.ts';
import { canSplice, canSpliceOne, spliceConnect, spliceTunnel } from '../flows/stream/splice.ts';
import type { ConnectDirective, RequestHead, ResponseHead } from '../hooks/http-request.ts';
import type { AppTunnelPipeline } from '../hooks/tunnel.ts';
import { connectFailure } from '../offramps/tcp/happy-eyeballs.ts';
import type { Runtime } from '../runtime.ts';
import { forkRequest } from '../telemetry/fork.ts';
import { egressMetrics, tunnelMetrics } from '../telemetry/metrics.ts';

/** A client the addon can run a whole tunnel for: a plain TCP socket, read by nobody. */
export interface SpliceableClient {
  readonly socket: Duplex;
  /** Bytes that came after the CONNECT head, for the upstream. */
  readonly early: Buffer | null;
  /** The 2xx answer to write once connected. */
  readonly head: Buffer;
}

/** A CONNECT as an on-ramp presents it. */
export interface ConnectExchange {
  readonly head: RequestHead;
  /** True once the client went away (the tunnel attempt is abandoned). */
  readonly closed: boolean;
  /** Sends the 2xx head and returns the stream carrying the tunnel's bytes. Called at most once. */
  accept(res: ResponseHead): Duplex;
  /** Answers `status` with a short text body and ends the exchange. */
  reject(status: number, body: string): void;
  /**
   * The client for the addon's whole-tunnel path ({@link spliceConnect}), or null when it cannot
   * take it (TLS, an HTTP/2 stream, writes still queued). Accepting is then the addon's: the
   * exchange is not `accept`ed, and `reject` still answers a failed connect.
   */
  spliceable?(): SpliceableClient | null;
}

/** Runs one CONNECT tunnel to `target` until it ends; never throws. */
export function serveConnect(
  rt: Runtime,
  conn: IngressConnection,
  ex: ConnectExchange,
  target: SocketAddr,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'connect', 'CONNECT', target, rt.ext);
  conn.endpoint.metrics.connectRequests.inc();
  return forkRequest(request, () => tunnel(rt, request, ex)).finally(() => {
    conn.tunnels--;
  });
}

function refuse(
  rt: Runtime,
  request: RequestState,
  ex: ConnectExchange,
  status: number,
  reason: string,
  why: string,
): void {
  request.status = status;
  countFailure(request, status);
  if (!ex.closed) ex.reject(status, reason);
  recordEnd(rt, request, 0, 0, why);
}

async function tunnel(rt: Runtime, request: RequestState, ex: ConnectExchange): Promise<void> {
  const connectHook = rt.hooks.proxyConnectRequest;
  if (connectHook !== null) {
    let d: ConnectDirective;
    try {
      d = await connectHook(ex.head, request);
    } catch (e) {
      const err = rt.hookFailed('HttpRequestHook.handleProxyConnectRequest', e);
      refuse(rt, request, ex, httpStatusFor(err), reasonOf(err), err.code);
      return;
    }
    request.decisions.push(`connect:${d?.kind ?? 'allow'}`);
    if (d !== undefined && d.kind === 'block') {
      refuse(rt, request, ex, d.status, d.reason, 'blocked');
      return;
    }
  }

  const eg = new EgressState(request.ingress, request, request.target, rt.ext);
  const client = wholeTunnel(rt, ex);
  if (client !== null) return addonTunnel(rt, request, ex, eg, client);
  return tunnelInJs(rt, request, ex, eg);
}

/** Egress, answer, pipeline and carry, in JS (the general path). */
async function tunnelInJs(
  rt: Runtime,
  request: RequestState,
  ex: ConnectExchange,
  eg: EgressState,
  resolved?: readonly string[],
): Promise<void> {
  let upstream: Duplex;
  let early: Buffer | null;
  try {
    const c = await connectTunnelEgress(rt, eg, request.decisions, resolved);
    upstream = c.socket;
    early = c.head;
    request.upstream = formatRemote(c.remote);
  } catch (e) {
    refuse(rt, request, ex, httpStatusFor(e), reasonOf(e), isOxyError(e) ? e.code : 'error');
    return;
  }
  if (ex.closed) {
    upstream.destroy();
    recordEnd(rt, request, 0, 0, 'client_closed');
    return;
  }

  let res: ResponseHead = { status: 200, headers: {} };
  const responseHook = rt.hooks.proxyConnectResponse;
  if (responseHook !== null) {
    try {
      res = (await responseHook(res, request)) ?? res;
    } catch (e) {
      upstream.destroy();
      const err = rt.hookFailed('HttpRequestHook.handleProxyConnectResponse', e);
      refuse(rt, request, ex, httpStatusFor(err), reasonOf(err), err.code);
      return;
    }
    if (res.status < 200 || res.status > 299) {
      upstream.destroy();
      refuse(rt, request, ex, res.status, 'refused', 'blocked');
      return;
    }
  }
  if (ex.closed) {
    upstream.destroy();
    recordEnd(rt, request, 0, 0, 'client_closed');
    return;
  }
  request.status = res.status;
  const client = ex.accept(res);
  if (early !== null) client.write(early);

  let pipeline: AppTunnelPipeline | undefined;
  const pipelineHook = rt.hooks.appTunnelPipeline;
  if (pipelineHook !== null) {
    try {
      pipeline = await pipelineHook(request, eg);
    } catch (e) {
      rt.hookFailed('TunnelHook.getAppTunnelPipeline', e);
      client.destroy();
      upstream.destroy();
      recordEnd(rt, request, 0, 0, 'OXY_ERR_HOOK_FAILED');
      return;
    }
  }
  if (pipeline !== undefined) {
    request.decisions.push('tunnel:app');
    let reason = 'done';
    try {
      await pipeline(client, upstream);
    } catch (e) {
      rt.hookFailed('TunnelHook.getAppTunnelPipeline', e);
      reason = 'OXY_ERR_HOOK_FAILED';
    }
    client.destroy();
    upstream.destroy();
    finishTunnel(rt, request, 0, 0, reason);
    return;
  }
  // Returned, not awaited: this frame (and the sockets, exchange and egress result it holds)
  // is released while the tunnel runs; an idle tunnel keeps only what `carry` needs.
  return carry(rt, request, client, upstream);
}

/**
 * The addon can run the whole tunnel (connect, answer, splice) when nothing between the egress
 * decision and the splice needs JS: no egress, response or pipeline hook, the direct default
 * egress, splicing on, and a client the addon can take.
 */
function wholeTunnel(rt: Runtime, ex: ConnectExchange): SpliceableClient | null {
  const h = rt.hooks;
  if (
    h.egressConnection !== null ||
    h.tcpConnectOverride !== null ||
    h.egressEstablished !== null ||
    h.proxyConnectResponse !== null ||
    h.appTunnelPipeline !== null ||
    rt.defaultProxy !== null ||
    ex.spliceable === undefined
  )
    return null;
  return ex.spliceable();
}

/** The tunnel run by the addon: the policy here (resolution, blocklist), the rest on its thread. */
async function addonTunnel(
  rt: Runtime,
  request: RequestState,
  ex: ConnectExchange,
  eg: EgressState,
  client: SpliceableClient,
): Promise<void> {
  const ep = request.ingress.endpoint.settings;
  if (!ep.tunnel_splice || !canSpliceOne(client.socket)) return tunnelInJs(rt, request, ex, eg);
  const target = eg.target;
  const started = performance.now();
  let ips: string[];
  try {
    const found = addressesFor(rt, eg, target, false);
    ips = Array.isArray(found) ? found : await found;
  } catch (e) {
    request.decisions.push('egress:direct');
    egressMetrics.connect_failed_total({ code: isOxyError(e) ? e.code : 'unknown' }).inc();
    refuse(rt, request, ex, httpStatusFor(e), reasonOf(e), isOxyError(e) ? e.code : 'error');
    return;
  }
  const source = rt.settings.egress.source_addr;
  const ip = ips[0] as string;
  // Several addresses (a name with A and AAAA records) race in JS (Happy Eyeballs); a zone id
  // (fe80::1%eth0) is not for the addon either. The addresses go along: the resolution and
  // `handleUpstreamIps` ran once.
  if (ips.length !== 1 || ip.includes('%') || ex.closed) return tunnelInJs(rt, request, ex, eg, ips);
  request.decisions.push('egress:direct');
  request.upstream = formatRemote({ host: ip, port: target.port });
  const timeoutMs = rt.settings.egress.connect_timeout;
  const r = await spliceConnect(
    client.socket,
    {
      ip,
      port: target.port,
      sourceIp: source !== null && net.isIP(source) === net.isIP(ip) ? source : '',
      head: client.head,
      early: client.early,
      connectTimeoutMs: timeoutMs,
    },
    { idleTimeoutMs: ep.tunnel_idle_timeout, maxLifetimeMs: ep.tunnel_max_lifetime },
    () => {
      request.status = 200;
      egressMetrics.connect_latency_seconds().observe((performance.now() - started) / 1000);
    },
  );
  if (r.connectError !== null) {
    const err = connectFailure(ip, target.port, r.connectError, timeoutMs);
    egressMetrics.connect_failed_total({ code: err.code }).inc();
    refuse(rt, request, ex, httpStatusFor(err), reasonOf(err), err.code);
    return;
  }
  finishTunnel(rt, request, r.bytesUp, r.bytesDown, r.reason);
}

/** Moves the tunnel's bytes until it ends, then reports it. */
function carry(rt: Runtime, request: RequestState, client: Duplex, upstream: Duplex): Promise<void> {
  const ep = request.ingress.endpoint.settings;
  const opts = { idleTimeoutMs: ep.tunnel_idle_timeout, maxLifetimeMs: ep.tunnel_max_lifetime };
  // Nothing inspects these bytes: move them in the kernel when both sides are plain TCP. The
  // splice adds its byte counts to the sockets' counters, so the connection-close hook still
  // sees them.
  const done =
    ep.tunnel_splice && canSplice(client, upstream)
      ? spliceTunnel(client, upstream, opts)
      : new StreamPump(client, upstream, opts).done;
  return done.then((r) => finishTunnel(rt, request, r.bytesUp, r.bytesDown, r.reason));
}

function finishTunnel(rt: Runtime, request: RequestState, up: number, down: number, reason: string): void {
  tunnelMetrics.bytes_total({ direction: 'up' }).inc(up);
  tunnelMetrics.bytes_total({ direction: 'down' }).inc(down);
  tunnelMetrics.duration_seconds().observe((performance.now() - request.startedAt) / 1000);
  recordEnd(rt, request, up, down, reason);
}

function formatRemote(a: SocketAddr): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
