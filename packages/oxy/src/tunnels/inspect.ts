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
import type { EgressConnection, EgressRoute } from '../egress/connect.ts';
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
      'hook (handleTunnelStart threw), refused (a decision that does not fit the bytes), ' +
      'upstream_connect (a tunnel answered before it had a connection of its own could not connect).',
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
 * Waits for the first bytes of either side (the client's only, before a late connect); what was
 * read is pushed back (`unshift`) into its stream, so nothing is lost for whoever reads next.
 */
function firstBytes(client: Duplex, upstream: Duplex | null): Promise<FirstBytes> {
  return new Promise((resolve) => {
    const done = (r: FirstBytes): void => {
      clearTimeout(timer);
      client.off('data', onClient);
      upstream?.off('data', onUpstream);
      client.off('end', onNone);
      client.off('close', onNone);
      client.pause();
      upstream?.pause();
      resolve(r);
    };
    const onClient = (chunk: Buffer): void => {
      done({ who: 'client', chunk });
      client.unshift(chunk);
    };
    const onUpstream = (chunk: Buffer): void => {
      done({ who: 'upstream' });
      upstream?.unshift(chunk);
    };
    const onNone = (): void => done({ who: 'none' });
    const timer = setTimeout(onNone, FIRST_BYTES_MS);
    client.on('data', onClient);
    upstream?.on('data', onUpstream);
    client.once('end', onNone);
    client.once('close', onNone);
    // A 'data' listener does not start a stream paused on purpose (an upgraded flow's socket is
    // held until its upstream connected): read both now.
    client.resume();
    upstream?.resume();
  });
}

/**
 * A tunnel's upstream: connected before the CONNECT was answered, or, on the
 * `lateTunnelConnect` path, connected only when the tunnel's bytes need a connection of its
 * own (the pool cannot serve its requests, or it is passed through).
 */
export class TunnelUpstream {
  #socket: Duplex | null;
  #remote: SocketAddr | null;
  readonly #connect: (() => Promise<EgressConnection>) | null;

  private constructor(conn: EgressConnection | null, connect: (() => Promise<EgressConnection>) | null) {
    this.#socket = conn?.socket ?? null;
    this.#remote = conn?.remote ?? null;
    this.#connect = connect;
  }

  /** An upstream connected before the answer. */
  static connected(conn: EgressConnection): TunnelUpstream {
    return new TunnelUpstream(conn, null);
  }

  /** An upstream that `connect` opens on first use; `connect` records where it went. */
  static late(connect: () => Promise<EgressConnection>): TunnelUpstream {
    return new TunnelUpstream(null, connect);
  }

  /** The socket, or null while a late upstream is not connected. */
  get socket(): Duplex | null {
    return this.#socket;
  }

  /** The address connected to, or null while not connected. */
  get remote(): SocketAddr | null {
    return this.#remote;
  }

  /** The socket, connecting a late upstream now; throws the connect's error. */
  async open(): Promise<Duplex> {
    if (this.#socket !== null) return this.#socket;
    const conn = await (this.#connect as () => Promise<EgressConnection>)();
    this.#socket = conn.socket;
    this.#remote = conn.remote;
    return conn.socket;
  }

  destroy(): void {
    this.#socket?.destroy();
  }
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
  client: Duplex,
  upstream: TunnelUpstream,
  reason: string,
  error: OxyError,
): void {
  interceptionMetrics.failures_total({ reason }).inc();
  request.error = error;
  warn(request, request.target.host, reason, error);
  client.destroy();
  upstream.destroy();
  finishStream(rt, request, 0, 0, error.code);
}

/** The one WARN line of a failed inspected tunnel, with its fields. */
function warn(request: RequestState, target: string, reason: string, error: OxyError): void {
  const fields = {
    request_id: request.id,
    target: formatHostPort(target, request.target.port),
    reason,
    err: error.message,
  };
  const t = request.telemetry;
  if (t === null) log.warn('inspected tunnel failed', fields);
  else t.apply(() => log.warn('inspected tunnel failed', fields));
}

/** The default decision (no hook): `interception.*` for TLS, pass-through otherwise. */
function defaultDecision(rt: Runtime, request: RequestState, start: TunnelStart): TunnelDecision {
  if (start.kind === 'tls' && rt.interception?.shouldIntercept(start.serverName, request.target.host))
    return TunnelDecision.intercept();
  return TunnelDecision.passThrough();
}

/**
 * True when a CONNECT tunnel may be answered before it has an upstream connection of its own
 * (the `lateTunnelConnect` fast path): the default decision would intercept it by its CONNECT
 * host, its requests would route as the tunnel does, and the pool holds a connection verified
 * for that host, idle. The origin is then known to be reachable, and the first request takes
 * that connection: a connection of the tunnel's own would be opened and closed unused. A
 * tunnel that turns out otherwise (another SNI, not TLS, passed through) connects then.
 */
export function connectsLate(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  route: EgressRoute,
): boolean {
  if (!rt.fast.lateTunnelConnect || request.kind !== 'connect' || rt.interception === null) return false;
  if (!adoptable(rt, route) || !rt.interception.shouldIntercept(null, request.target.host)) return false;
  return endpointPool(rt, request.ingress.endpoint).hasIdle(poolKey(rt, request, eg, request.target.host));
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
  upstream: TunnelUpstream,
): Promise<void> {
  const first = await firstBytes(client, upstream.socket);
  if (first.who !== 'client') {
    // A client that left before a late upstream was needed: nothing to connect for.
    if (upstream.socket === null && (client.destroyed || client.readableEnded)) {
      client.destroy();
      return finishStream(rt, request, 0, 0, 'client_closed');
    }
    return passThrough(rt, request, eg, client, upstream);
  }
  let start: TunnelStart;
  let hello: PeekedClientHello | null = null;
  const kind = classifyFirstBytes(first.chunk);
  if (kind === 'tls') {
    try {
      hello = await readClientHello(client, { timeoutMs: FIRST_BYTES_MS });
    } catch (e) {
      const err = isOxyError(e) ? e : new OxyError(OXY_ERR.TLS_CLIENT_HELLO, String(e));
      return fail(rt, request, client, upstream, 'client_hello', err);
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
      return fail(rt, request, client, upstream, 'hook', rt.hookFailed('TunnelHook.handleTunnelStart', e));
    }
  }
  request.decisions.push(`tunnel:${decision.kind}`);
  interceptionMetrics.tunnels_total({ decision: decision.kind }).inc();

  switch (decision.kind) {
    case 'passThrough':
      if (hello !== null) client.unshift(hello.bytes);
      return passThrough(rt, request, eg, client, upstream);
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
      return intercept(rt, request, eg, adoptable(rt, route), client, upstream, hello);
  }
}

/** A late connect's failure as an error (the connectors throw `OxyError`s). */
function connectError(e: unknown): OxyError {
  return isOxyError(e) ? e : new OxyError(OXY_ERR.CONNECT_FAILED, String(e), { source: 'upstream' });
}

/** Carries the tunnel's bytes as they are, connecting a late upstream first. */
async function passThrough(
  rt: Runtime,
  request: RequestState,
  eg: EgressState,
  client: Duplex,
  upstream: TunnelUpstream,
): Promise<void> {
  let socket: Duplex;
  try {
    socket = await upstream.open();
  } catch (e) {
    return fail(rt, request, client, upstream, 'upstream_connect', connectError(e));
  }
  return carryStream(rt, request, eg, client, socket);
}

function refuse(
  rt: Runtime,
  request: RequestState,
  client: Duplex,
  upstream: TunnelUpstream,
  why: string,
): void {
  fail(rt, request, client, upstream, 'refused', new OxyError(OXY_ERR.BLOCKED, `tunnel refused: ${why}`));
}

/**
 * True when the verified origin connection of an intercepted tunnel may go to the endpoint's
 * pool once the origin is proved: the tunnel's requests will route exactly as the tunnel did
 * (the default egress decision, a direct connection without a PROXY header), so the first
 * request does not open a second connection. Otherwise (a `handleConnection` hook decides
 * each request anew) the connection is closed.
 */
function adoptable(rt: Runtime, route: EgressRoute): boolean {
  return rt.fast.defaultEgress && route.kind === 'direct' && route.proxyHeader === undefined;
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
  toPool: boolean,
  client: Duplex,
  upstream: TunnelUpstream,
  peeked: PeekedClientHello,
): Promise<void> {
  const name = peeked.hello.serverName ?? request.target.host;
  const pool = endpointPool(rt, request.ingress.endpoint);
  const key = toPool ? poolKey(rt, request, eg, name) : null;
  // A connection of the same key idle in the pool was verified for this name under this trust,
  // and the first request takes it: the origin is proved without another handshake. The
  // tunnel's own TCP connection, if it has one, is closed unused.
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
  let reason = 'origin_tls';
  let socket: Duplex | null = null;
  try {
    socket = await upstream.open();
  } catch (e) {
    failure = connectError(e);
    reason = 'upstream_connect';
  }
  if (socket !== null) {
    try {
      origin = await connectTls({
        host: name,
        port: request.target.port,
        socket,
        trust: rt.upstreamTrust,
        // What the pool will offer: an h2-only origin refuses a hello without h2.
        alpn: rt.settings.egress.tls.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
        timeoutMs: FIRST_BYTES_MS,
      });
    } catch (e) {
      failure = isOxyError(e) ? e : new OxyError(OXY_ERR.UPSTREAM_TLS, String(e), { source: 'upstream' });
    }
  }
  const clientTls = await terminateClient(rt, request, client, upstream, peeked, failure === null, origin);
  if (clientTls === null) return;
  if (origin === null) {
    const err = failure as OxyError;
    upstream.destroy();
    interceptionMetrics.failures_total({ reason }).inc();
    request.error = err;
    warn(request, name, reason, err);
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
  else pool.adopt(key, origin.socket, upstream.remote as SocketAddr, origin.alpn);
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
  upstream: TunnelUpstream,
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
    fail(rt, request, client, upstream, 'client_handshake', err);
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
