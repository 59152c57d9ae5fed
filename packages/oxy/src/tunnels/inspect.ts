/**
 * What happens to a tunnel's bytes once it is open (a CONNECT's 2xx went out, a `tcp` endpoint's
 * or an upgraded IP flow's stream is connected), when the app has
 * `TunnelHook.handleTunnelStart` or `interception.enabled` is on: the client's first bytes are
 * read (a whole ClientHello for TLS), a decision is taken per tunnel (the hook's, or the
 * default from `interception.*`), and the tunnel is intercepted, served as HTTP, passed
 * through (to `getAppTunnelPipeline`, the splice or the pump) or closed.
 *
 * Interception, in order: ClientHello → decision → verified TLS to the origin over the tunnel's
 * own upstream connection (ALPN `http/1.1`: the request pipeline speaks HTTP/1.1 upstream) →
 * leaf minted for the SNI (or the CONNECT target, with an IP SAN for an IP literal) → the
 * client's TLS terminated, offering `h2` and `http/1.1` as the client did (each request is
 * re-sent by the pipeline, so the two sides need not speak the same version) → the requests
 * inside, each through the forwarding pipeline as kind `intercepted`, linked to this tunnel's
 * request, on the tunnel's upstream agent. The verified origin connection joins the endpoint's
 * pool for those requests; a tunnel that finds a connection of its pool key idle (verified for
 * the same name under the same trust) skips the origin handshake and closes its TCP
 * connection. An origin that fails TLS is answered 502 naming the reason inside the client's
 * TLS; a client that sends garbage, a truncated or malformed ClientHello, or aborts the
 * handshake loses its tunnel only. Each failure is counted
 * (`oxy_interception_failures_total{reason}`), logged once at WARN with the tunnel's fields, and
 * written as the tunnel's close reason.
 *
 * A server that speaks first (SMTP, a database) is never waited on: the tunnel passes through
 * as soon as the upstream sends before the client, with no hook call.
 */

import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { counter, defineMetrics, log } from 'foundations/telemetry';
import { formatHostPort } from '../context/addr.ts';
import type { RequestKind, SocketAddr } from '../context/contexts.ts';
import type { EgressState, RequestState } from '../context/state.ts';
import type { EgressRoute } from '../egress/connect.ts';
import { isOxyError, OXY_ERR, OxyError } from '../errors.ts';
import { routeFor } from '../flows/http/route.ts';
import { carryStream, finishStream } from '../flows/stream/runner.ts';
import { TunnelDecision, type TunnelStart } from '../hooks/tunnel.ts';
import { connectTls, type UpstreamTlsConnection } from '../offramps/tls/connect.ts';
import { endpointPool } from '../onramps/http1/lean.ts';
import type { Runtime } from '../runtime.ts';
import { serveTunnelHttp, serveTunnelHttp2 } from './serve-http.ts';
import { answerBadGateway } from './tls-intercept/index.ts';
import { type PeekedClientHello, readClientHello, terminateTls } from './tls-intercept/terminate.ts';

/** Interception's counters. */
export const interceptionMetrics = defineMetrics('interception', {
  tunnels_total: counter<{ decision: string }>(
    'Tunnels whose first bytes were read (CONNECT, tcp endpoint, upgraded IP flow), by decision: intercept, http, passThrough, block.',
  ),
  failures_total: counter<{ reason: string }>(
    'Inspected tunnels that failed: client_hello (garbage, truncated, bad SNI), client_handshake ' +
      '(the client refused the minted leaf), origin_tls (the origin failed verification or TLS), ' +
      'hook (handleTunnelStart threw), refused (a decision that does not fit the bytes).',
  ),
});

/** How long the client has to send its first bytes (and a whole ClientHello), and each handshake. */
const FIRST_BYTES_MS = 10_000;

/**
 * True when a stream of `kind` goes through {@link inspectTunnel}: a CONNECT tunnel when the
 * app has `handleTunnelStart` or `interception.enabled` is on; a `tcp` endpoint's stream or an
 * upgraded IP flow (`ip-tcp`) only when the app has the hook (the settings' default intercepts
 * CONNECT tunnels only: a raw stream names no host to match `interception.hosts`).
 */
export function inspectsTunnels(rt: Runtime, kind: RequestKind): boolean {
  if (kind === 'connect') return rt.interception !== null || rt.hooks.tunnelStart !== null;
  return (kind === 'tcp' || kind === 'ip-tcp') && rt.hooks.tunnelStart !== null;
}

type FirstBytes = { readonly who: 'client'; readonly chunk: Buffer } | { readonly who: 'upstream' | 'none' };

/**
 * Waits for the first bytes of either side; what was read is pushed back (`unshift`) into its
 * stream, so nothing is lost for whoever reads next.
 */
function firstBytes(client: Duplex, upstream: Duplex): Promise<FirstBytes> {
  return new Promise((resolve) => {
    const done = (r: FirstBytes): void => {
      clearTimeout(timer);
      client.off('data', onClient);
      upstream.off('data', onUpstream);
      client.off('end', onNone);
      client.off('close', onNone);
      client.pause();
      upstream.pause();
      resolve(r);
    };
    const onClient = (chunk: Buffer): void => {
      done({ who: 'client', chunk });
      client.unshift(chunk);
    };
    const onUpstream = (chunk: Buffer): void => {
      done({ who: 'upstream' });
      upstream.unshift(chunk);
    };
    const onNone = (): void => done({ who: 'none' });
    const timer = setTimeout(onNone, FIRST_BYTES_MS);
    client.on('data', onClient);
    upstream.on('data', onUpstream);
    client.once('end', onNone);
    client.once('close', onNone);
    // A 'data' listener does not start a stream paused on purpose (an upgraded flow's socket is
    // held until its upstream connected): read both now.
    client.resume();
    upstream.resume();
  });
}

/**
 * What a tunnel's first bytes look like: `tls` for a TLS handshake record (`0x16`), `http` when
 * they start like an HTTP/1.x request line (a method token of 3 to 20 capitals, then a space, or
 * only capitals so far), `other` for anything else.
 */
export function classifyFirstBytes(chunk: Uint8Array): 'tls' | 'http' | 'other' {
  if (chunk.length === 0) return 'other';
  if (chunk[0] === 0x16) return 'tls';
  let i = 0;
  while (i < chunk.length && i < 21) {
    const c = chunk[i] as number;
    if (c < 65 || c > 90) break;
    i++;
  }
  if (i === chunk.length) return i >= 1 ? 'http' : 'other';
  return i >= 3 && i <= 20 && chunk[i] === 32 ? 'http' : 'other';
}

/** A failure of an inspected tunnel: counted, logged once, the tunnel closed with `code`. */
function fail(
  rt: Runtime,
  request: RequestState,
  streams: readonly Duplex[],
  reason: string,
  error: OxyError,
): void {
  interceptionMetrics.failures_total({ reason }).inc();
  request.error = error;
  const fields = {
    request_id: request.id,
    target: formatHostPort(request.target.host, request.target.port),
    reason,
    err: error.message,
  };
  const t = request.telemetry;
  if (t === null) log.warn('inspected tunnel failed', fields);
  else t.apply(() => log.warn('inspected tunnel failed', fields));
  for (const s of streams) s.destroy();
  finishStream(rt, request, 0, 0, error.code);
}

/** The default decision (no hook): `interception.*` for TLS, pass-through otherwise. */
function defaultDecision(rt: Runtime, request: RequestState, start: TunnelStart): TunnelDecision {
  if (start.kind === 'tls' && rt.interception?.shouldIntercept(start.serverName, request.target.host))
    return TunnelDecision.intercept();
  return TunnelDecision.passThrough();
}

/**
 * Runs one CONNECT tunnel whose 2xx went out: reads the first bytes, decides, and carries it
 * (intercept, HTTP, pass-through or close). Writes the tunnel's one record; never throws.
 */
export async function inspectTunnel(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  route: EgressRoute,
  client: Duplex,
  upstream: Duplex,
  remote: SocketAddr,
): Promise<void> {
  const first = await firstBytes(client, upstream);
  if (first.who !== 'client') return carryStream(rt, request, eg, client, upstream);
  let start: TunnelStart;
  let hello: PeekedClientHello | null = null;
  const kind = classifyFirstBytes(first.chunk);
  if (kind === 'tls') {
    try {
      hello = await readClientHello(client, { timeoutMs: FIRST_BYTES_MS });
    } catch (e) {
      const err = isOxyError(e) ? e : new OxyError(OXY_ERR.TLS_CLIENT_HELLO, String(e));
      return fail(rt, request, [client, upstream], 'client_hello', err);
    }
    start = { kind: 'tls', serverName: hello.hello.serverName, alpn: hello.hello.alpn };
  } else {
    start = { kind, serverName: null, alpn: [] };
  }

  let decision: TunnelDecision;
  const hook = rt.hooks.tunnelStart;
  if (hook === null) decision = defaultDecision(rt, request, start);
  else {
    try {
      decision = await hook(start, request);
    } catch (e) {
      return fail(rt, request, [client, upstream], 'hook', rt.hookFailed('TunnelHook.handleTunnelStart', e));
    }
  }
  request.decisions.push(`tunnel:${decision.kind}`);
  interceptionMetrics.tunnels_total({ decision: decision.kind }).inc();

  switch (decision.kind) {
    case 'passThrough':
      if (hello !== null) client.unshift(hello.bytes);
      return carryStream(rt, request, eg, client, upstream);
    case 'block':
      client.destroy();
      upstream.destroy();
      request.error = decision.reason;
      finishStream(rt, request, 0, 0, 'blocked');
      return;
    case 'http': {
      if (start.kind !== 'http')
        return refuse(rt, request, client, upstream, `http() for a ${start.kind} start`);
      // The requests go through the endpoint's pool along the same egress pipeline.
      upstream.destroy();
      return serveInside(rt, request, client, client, request.target.host, 'tunnelled', 'http', false);
    }
    case 'intercept':
      if (hello === null)
        return refuse(rt, request, client, upstream, `intercept() for a ${start.kind} start`);
      if (rt.interception === null)
        return refuse(rt, request, client, upstream, 'intercept() without interception.enabled');
      return intercept(rt, request, eg, handOver(rt, route, remote), client, upstream, hello);
  }
}

function refuse(rt: Runtime, request: RequestState, client: Duplex, upstream: Duplex, why: string): void {
  fail(rt, request, [client, upstream], 'refused', new OxyError(OXY_ERR.BLOCKED, `tunnel refused: ${why}`));
}

/**
 * Where the verified origin connection of an intercepted tunnel may go once the origin is
 * proved: the endpoint's pool, when the tunnel's requests will route exactly as the tunnel did
 * (the default egress decision, a direct connection without a PROXY header), so the first
 * request does not open a second connection. Null otherwise (a `handleConnection` hook decides
 * each request anew): the connection is closed.
 */
function handOver(rt: Runtime, route: EgressRoute, remote: SocketAddr): SocketAddr | null {
  if (!rt.fast.defaultEgress || route.kind !== 'direct' || route.proxyHeader !== undefined) return null;
  return remote;
}

/** The pool key the requests of a tunnel to `request.target`, verified for `name`, use. */
function poolKey(rt: Runtime, request: RequestState, eg: EgressState, name: string): string {
  const target = request.target;
  return routeFor(rt, eg, { kind: 'direct', addr: target }, target, 'https', '', '/', name).target.key;
}

async function intercept(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  remote: SocketAddr | null,
  client: Duplex,
  upstream: Duplex,
  peeked: PeekedClientHello,
): Promise<void> {
  const name = peeked.hello.serverName ?? request.target.host;
  const pool = endpointPool(rt, request.ingress.endpoint);
  const key = remote === null ? null : poolKey(rt, request, eg, name);
  // A connection of the same key idle in the pool was verified for this name under this trust,
  // and the first request takes it: the origin is proved without another handshake. The
  // tunnel's own TCP connection is closed unused.
  if (key !== null && pool.hasIdle(key)) {
    upstream.destroy();
    const clientTls = await terminateClient(rt, request, client, upstream, peeked, true, null);
    if (clientTls === null) return;
    clientTls.on('error', () => {});
    return serveInside(
      rt,
      request,
      client,
      clientTls,
      name,
      'intercepted',
      'https',
      clientTls.alpnProtocol === 'h2',
    );
  }
  let origin: UpstreamTlsConnection | null = null;
  let failure: OxyError | null = null;
  try {
    origin = await connectTls({
      host: name,
      port: request.target.port,
      socket: upstream,
      trust: rt.upstreamTrust,
      // What the pool will offer: an h2-only origin refuses a hello without h2.
      alpn: rt.settings.egress.tls.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
      timeoutMs: FIRST_BYTES_MS,
    });
  } catch (e) {
    failure = isOxyError(e) ? e : new OxyError(OXY_ERR.UPSTREAM_TLS, String(e), { source: 'upstream' });
  }
  const clientTls = await terminateClient(rt, request, client, upstream, peeked, failure === null, origin);
  if (clientTls === null) return;
  if (origin === null) {
    const err = failure as OxyError;
    upstream.destroy();
    interceptionMetrics.failures_total({ reason: 'origin_tls' }).inc();
    request.error = err;
    const t = request.telemetry;
    const fields = { request_id: request.id, target: name, reason: 'origin_tls', err: err.message };
    if (t === null) log.warn('inspected tunnel failed', fields);
    else t.apply(() => log.warn('inspected tunnel failed', fields));
    await answerBadGateway(clientTls, err.message, FIRST_BYTES_MS);
    clientTls.destroy();
    finishStream(rt, request, 0, 0, err.code);
    return;
  }
  // Errors after the handshakes end the tunnel through 'close'; none may go unhandled.
  clientTls.on('error', () => {});
  // The verified connection proved the origin; the requests go through the endpoint's pool,
  // whose https connections are verified for the same name (`routeFor`'s key holds it). The
  // connection joins that pool under the key the tunnel's requests use, when they route as
  // the tunnel did; otherwise it is closed.
  if (key === null) origin.socket.destroy();
  else pool.adopt(key, origin.socket, remote as SocketAddr, origin.alpn);
  return serveInside(
    rt,
    request,
    client,
    clientTls,
    name,
    'intercepted',
    'https',
    clientTls.alpnProtocol === 'h2',
  );
}

/**
 * The client's TLS, terminated with the leaf for its SNI (or the CONNECT host). `originOk`
 * false offers `http/1.1` only (the 502 goes out in HTTP/1.1). On failure the tunnel is
 * recorded as failed (`client_handshake`), `origin` closed, and null returned.
 */
async function terminateClient(
  rt: Runtime,
  request: RequestState,
  client: Duplex,
  upstream: Duplex,
  peeked: PeekedClientHello,
  originOk: boolean,
  origin: UpstreamTlsConnection | null,
): Promise<tls.TLSSocket | null> {
  const interception = rt.interception as NonNullable<Runtime['interception']>;
  const { hello, bytes } = peeked;
  // Every request is re-sent by the pipeline: the client may speak h2 whatever the origin speaks.
  const offered = ['h2', 'http/1.1'].filter((p) => hello.alpn.includes(p));
  const clientAlpn = originOk ? offered : offered.filter((p) => p === 'http/1.1');
  try {
    const leaf = await interception.leaves.leafFor(hello.serverName, request.target.host);
    return await terminateTls(client, bytes, leaf, clientAlpn, FIRST_BYTES_MS);
  } catch (e) {
    origin?.socket.destroy();
    const err = isOxyError(e) ? e : new OxyError(OXY_ERR.TLS_CLIENT_HELLO, String(e));
    fail(rt, request, [client, upstream], 'client_handshake', err);
    return null;
  }
}

/** Serves the requests inside a tunnel until its client side closes, then writes its record. */
async function serveInside(
  rt: Runtime,
  request: RequestState,
  raw: Duplex,
  stream: Duplex,
  serverName: string,
  kind: 'intercepted' | 'tunnelled',
  scheme: 'http' | 'https',
  h2: boolean,
): Promise<void> {
  const sock = raw as Partial<net.Socket>;
  const read0 = sock.bytesRead ?? 0;
  const written0 = sock.bytesWritten ?? 0;
  const options = {
    kind,
    parent: request,
    origin: { scheme, authority: formatHostPort(serverName, request.target.port) },
    serverName,
  };
  try {
    if (h2) await serveTunnelHttp2(rt, stream, request.ingress, options);
    else await serveTunnelHttp(rt, stream, request.ingress, options);
  } finally {
    raw.destroy();
  }
  finishStream(rt, request, (sock.bytesRead ?? 0) - read0, (sock.bytesWritten ?? 0) - written0, 'done');
}
