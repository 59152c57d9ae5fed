/**
 * The egress pipeline: turns "the client wants host:port" into a connected upstream stream,
 * running the `EgressHook` methods at their steps and the framework's defaults where the app
 * has none. Every on-ramp that needs an upstream TCP connection comes through here: CONNECT
 * tunnels, forwarded requests (through the HTTP agent in `agent.ts`) and Upgrades.
 *
 * Order (also in the `EgressHook` module doc): decision → resolve (override or resolver) →
 * `handleUpstreamIps` → `blocked_cidrs` (after resolution: a name resolving into a blocked range
 * is blocked) → connect (override or Happy Eyeballs, `connect_timeout`, `source_addr`) →
 * `handleConnectionEstablished`. Errors are `OxyError`s whose codes map to 403/502/504.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort, unmappedIp } from '../context/addr.ts';
import type { SocketAddr } from '../context/contexts.ts';
import type { EgressState } from '../context/state.ts';
import { isOxyError, OXY_ERR, OxyError } from '../errors.ts';
import { EgressDecision, type ProxyHeaderOut } from '../hooks/egress.ts';
import { connectHappyEyeballs, type HappyEyeballsOptions } from '../offramps/tcp/happy-eyeballs.ts';
import { connectViaProxy, type UpstreamProxy } from '../offramps/upstream-proxy/connect.ts';
import { encodeProxyHeader } from '../protocols/proxy-protocol/index.ts';
import type { Runtime } from '../runtime.ts';
import { egressMetrics } from '../telemetry/metrics.ts';
import { untilAborted } from './abort.ts';
import { noPacketPath, type PacketPath, packetPathFor } from './packets.ts';
import { isWildcard, reachesListener } from './self.ts';
import { connectFirst, selectCandidates } from './upstream-select.ts';

/** A connected upstream. */
export interface EgressConnection {
  readonly socket: Duplex;
  /** The address connected to (`ip:port` form), for the audit record and `Proxy-Status`. */
  readonly remote: SocketAddr;
  /** Bytes that arrived with an upstream proxy's CONNECT answer: send them to the client first. */
  readonly head: Buffer | null;
}

/**
 * The address to connect to `ip` from: `egress.source_addr` when it is of `ip`'s family, else
 * undefined (the kernel chooses). The one rule of every connector: Happy Eyeballs, the upstream
 * proxy's connection, the addon's whole tunnels and UDP sockets. An IPv4-mapped source is its
 * IPv4 address: an IPv6 socket bound to it reaches no IPv6 destination.
 */
export function sourceFor(rt: Runtime, ip: string): string | undefined {
  const source = rt.settings.egress.source_addr;
  if (source === null) return undefined;
  const own = unmappedIp(source);
  return net.isIP(own) === net.isIP(ip) ? own : undefined;
}

/** The decision without an `EgressHook.handleConnection`: direct, or the configured upstream proxy. */
export function defaultDecision(rt: Runtime, eg: EgressState): EgressDecision {
  return rt.defaultProxy === null
    ? EgressDecision.direct(eg.target)
    : EgressDecision.viaProxy(rt.defaultProxy);
}

/** Runs `EgressHook.handleConnection`, or the default decision. */
export async function decideEgress(rt: Runtime, eg: EgressState): Promise<EgressDecision> {
  const hook = rt.hooks.egressConnection;
  if (hook === null) return defaultDecision(rt, eg);
  let decision: EgressDecision;
  try {
    decision = await hook(eg.target, eg);
  } catch (e) {
    throw rt.hookFailed('EgressHook.handleConnection', e);
  }
  if (decision === undefined || decision === null || typeof decision.kind !== 'string') {
    throw rt.hookFailed('EgressHook.handleConnection', new TypeError('did not return an EgressDecision'));
  }
  return decision;
}

/** The error for a block decision. */
export function egressBlocked(reason: string): OxyError {
  return new OxyError(OXY_ERR.EGRESS_BLOCKED, reason, { source: 'internal' });
}

async function resolve(rt: Runtime, eg: EgressState, host: string): Promise<string[]> {
  if (net.isIP(host) !== 0) return [host];
  const override = rt.hooks.dnsResolveOverride;
  if (override !== null) {
    let ips: string[] | undefined;
    try {
      ips = await override(host, eg);
    } catch (e) {
      throw rt.hookFailed('EgressHook.dnsResolveOverride', e);
    }
    if (ips !== undefined) return ips;
  }
  return [...(await rt.resolver.resolve(host)).addresses];
}

/**
 * Connects to `addr` (a name or an IP): resolution, the IP hook and the blocklist (unless
 * `trusted`, for an upstream proxy, or `resolved` gives their outcome already), then the
 * connect and the established event. `signal` aborts the connect (`OXY_ERR_ABORTED`, not
 * counted as a failed connect: the client left, the upstream did nothing wrong).
 */
export async function connectDirect(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
  trusted: boolean,
  resolved?: readonly string[],
  signal?: AbortSignal,
): Promise<{ socket: Duplex; remote: SocketAddr }> {
  // An upstream an app routes to a set of (`selectUpstream`): the candidates in turn.
  if (!trusted && resolved === undefined && rt.hooks.selectUpstream !== null) {
    const candidates = await selectCandidates(rt, eg, addr);
    if (candidates !== null)
      return connectFirst(rt.upstreamHealth, candidates, (c) =>
        connectOne(rt, eg, c, false, undefined, signal),
      );
  }
  return connectOne(rt, eg, addr, trusted, resolved, signal);
}

/** {@link connectDirect} to one address. */
async function connectOne(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
  trusted: boolean,
  resolved: readonly string[] | undefined,
  signal: AbortSignal | undefined,
): Promise<{ socket: Duplex; remote: SocketAddr }> {
  const started = performance.now();
  try {
    const found = resolved ?? addressesFor(rt, eg, addr, trusted);
    const ips = Array.isArray(found) ? (found as string[]) : await found;
    let socket: Duplex | undefined;
    let remote: SocketAddr | undefined;
    const override = rt.hooks.tcpConnectOverride;
    if (override !== null) {
      try {
        const offered = override(
          ips.map((host) => ({ host, port: addr.port })),
          eg,
        );
        // The app's connect takes no signal: a client that leaves stops the wait, and the
        // socket the app brings later is destroyed.
        socket =
          signal === undefined || !(offered instanceof Promise)
            ? await offered
            : await untilAborted(offered, signal, (s) => s?.destroy());
      } catch (e) {
        if (signal?.aborted) throw e;
        throw rt.hookFailed('EgressHook.tcpConnectOverride', e);
      }
      if (socket !== undefined) {
        const s = socket as Partial<net.Socket>;
        remote = { host: s.remoteAddress ?? ips[0] ?? addr.host, port: s.remotePort ?? addr.port };
      }
    }
    if (socket === undefined) {
      const opts = connectOptions(rt);
      const tcp = await connectHappyEyeballs(
        ips,
        addr.port,
        signal === undefined ? opts : { ...opts, signal },
      );
      socket = tcp;
      // One candidate: it is the address connected to (no getpeername(2) per connection).
      remote =
        ips.length === 1
          ? { host: ips[0] as string, port: addr.port }
          : { host: tcp.remoteAddress ?? '', port: tcp.remotePort ?? addr.port };
    }
    connectObserved(started);
    return { socket, remote: remote as SocketAddr };
  } catch (e) {
    countFailed(e);
    throw e;
  }
}

/** Counts a failed connect by its error's code; an aborted one is not a failure of the upstream. */
function countFailed(e: unknown): void {
  if (!isOxyError(e)) connectFailed('unknown');
  else if (e.code !== OXY_ERR.ABORTED) connectFailed(e.code);
}

/**
 * The addresses to connect to for `addr`: resolution, `handleUpstreamIps` and `blocked_cidrs`
 * (unless `trusted`, for an upstream proxy). Throws the blocked error when none is left.
 */
export async function addressesOf(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
  trusted: boolean,
): Promise<string[]> {
  let ips = net.isIP(addr.host) !== 0 ? [addr.host] : await resolve(rt, eg, addr.host);
  if (trusted) return ips;
  const ipsHook = rt.hooks.upstreamIps;
  if (ipsHook !== null) {
    try {
      ips = await ipsHook(ips, eg);
    } catch (e) {
      throw rt.hookFailed('EgressHook.handleUpstreamIps', e);
    }
  }
  const allowed = allowedIps(rt, ips);
  if (allowed.length === 0) {
    throw egressBlocked(
      ips.length === 0 ? 'no address left to connect to' : 'destination address is blocked',
    );
  }
  return allowed;
}

/**
 * {@link addressesOf}, with the answer at once (no promise, so no extra turn of the microtask
 * queue) for a literal address that no `handleUpstreamIps` sees.
 */
export function addressesFor(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
  trusted: boolean,
): string[] | Promise<string[]> {
  const literal = net.isIP(addr.host) !== 0 && (trusted || rt.fast.literalEgress);
  return literal ? allowedLiteral(rt, addr.host, trusted) : addressesOf(rt, eg, addr, trusted);
}

/** A literal address without `handleUpstreamIps`: the blocklist alone, and no await. */
function allowedLiteral(rt: Runtime, ip: string, trusted: boolean): string[] {
  if (!trusted && rt.blocklist.has(ip)) throw egressBlocked('destination address is blocked');
  return [ip];
}

/** `ips` without the blocked ones; the same array when none is blocked (the usual case). */
function allowedIps(rt: Runtime, ips: string[]): string[] {
  for (let i = 0; i < ips.length; i++) {
    if (rt.blocklist.has(ips[i] as string)) return ips.filter((ip) => !rt.blocklist.has(ip));
  }
  return ips;
}

const connectOptionsOf = new WeakMap<Runtime, HappyEyeballsOptions>();

/** The Happy Eyeballs options of `rt`'s settings, built once per runtime. */
function connectOptions(rt: Runtime): HappyEyeballsOptions {
  let opts = connectOptionsOf.get(rt);
  if (opts === undefined) {
    opts = {
      timeoutMs: rt.settings.egress.connect_timeout,
      // The source address by {@link sourceFor}, per attempt: no address is skipped for its family.
      connect: (host, port) =>
        net.connect({
          host,
          port,
          localAddress: sourceFor(rt, host),
          noDelay: true,
          autoSelectFamily: false,
          allowHalfOpen: true,
        }),
    };
    connectOptionsOf.set(rt, opts);
  }
  return opts;
}

/** Fires `handleConnectionEstablished`; a throw destroys `socket` and fails the caller. */
export function established(
  rt: Runtime,
  eg: EgressState,
  socket: { destroy(): unknown },
  remote: SocketAddr,
): void {
  const hook = rt.hooks.egressEstablished;
  if (hook === null) return;
  try {
    hook(remote, eg);
  } catch (e) {
    socket.destroy();
    throw rt.hookFailed('EgressHook.handleConnectionEstablished', e);
  }
}

/** The audit text of each decision: one shared string, not one built and kept per tunnel. */
const DECISION_TEXT: Readonly<Record<EgressDecision['kind'], string>> = {
  direct: 'egress:direct',
  viaProxy: 'egress:viaProxy',
  block: 'egress:block',
  packets: 'egress:packets',
};

/** The transport an egress connection carries. */
export type Transport = 'tcp' | 'udp';

/**
 * An egress decision carried out up to the connect: for a direct connection, the addresses to
 * try (resolved, seen by `handleUpstreamIps`, past the blocklist); for an upstream proxy, the
 * proxy. Every connector (Happy Eyeballs in JS, the addon's whole tunnel, a UDP socket) starts
 * from one, so the steps before the connect are written once.
 */
export type EgressRoute =
  | {
      readonly kind: 'direct';
      readonly ips: readonly string[];
      readonly port: number;
      /**
       * Set (and `ips` empty) when `selectUpstream` picks the upstream for this address at
       * connect time (TCP only): {@link connectStream} resolves and connects the candidates.
       */
      readonly select?: SocketAddr;
      /** A PROXY header to send first, or undefined. */
      readonly proxyHeader?: ProxyHeaderOut;
    }
  | { readonly kind: 'viaProxy'; readonly proxy: UpstreamProxy }
  /** Out as IP packets through the unit's IP tunnel off-ramp (`EgressDecision.packets`). */
  | { readonly kind: 'packets'; readonly path: PacketPath; readonly addr: SocketAddr };

/**
 * The steps of the egress pipeline before any connect: the decision (hook or default, recorded
 * in `decisions` as `egress:<kind>`), then for a direct one resolution, `handleUpstreamIps` and
 * `blocked_cidrs`. Throws the blocked error (403) for a block decision or when no address is
 * left. Answers at once (no promise) when nothing needs an await: the default decision and an
 * IP literal.
 */
export function routeEgress(
  rt: Runtime,
  eg: EgressState,
  decisions: string[],
  transport: Transport,
): EgressRoute | Promise<EgressRoute> {
  if (rt.fast.defaultEgress) return routeFor(rt, eg, defaultDecision(rt, eg), decisions, transport);
  return decideEgress(rt, eg).then((d) => routeFor(rt, eg, d, decisions, transport));
}

function routeFor(
  rt: Runtime,
  eg: EgressState,
  decision: EgressDecision,
  decisions: string[],
  transport: Transport,
): EgressRoute | Promise<EgressRoute> {
  decisions.push(DECISION_TEXT[decision.kind] ?? `egress:${decision.kind}`);
  switch (decision.kind) {
    case 'block':
      connectFailed(OXY_ERR.EGRESS_BLOCKED);
      throw egressBlocked(decision.reason);
    case 'direct': {
      const port = decision.addr.port;
      if (decision.addr.host === '' || port === 0) {
        connectFailed(OXY_ERR.NO_TARGET);
        throw new OxyError(OXY_ERR.NO_TARGET, 'no destination to connect to', { source: 'internal' });
      }
      // The decision's own header, or the one the endpoint sends every target (tcp endpoints).
      const proxyHeader =
        decision.options?.proxyProtocol ?? eg.ingress.endpoint.sendProxyProtocol ?? undefined;
      if (transport === 'tcp' && rt.hooks.selectUpstream !== null) {
        const select = decision.addr;
        return proxyHeader === undefined
          ? { kind: 'direct', ips: [], port, select }
          : { kind: 'direct', ips: [], port, select, proxyHeader };
      }
      const resolved = guardFailure(() => addressesFor(rt, eg, decision.addr, false));
      const found = Array.isArray(resolved)
        ? notSelf(eg, resolved, port, transport)
        : resolved.then((ips) => notSelf(eg, ips, port, transport));
      if (proxyHeader === undefined) {
        return Array.isArray(found)
          ? { kind: 'direct', ips: found, port }
          : found.then((ips) => ({ kind: 'direct', ips, port }));
      }
      return Array.isArray(found)
        ? { kind: 'direct', ips: found, port, proxyHeader }
        : found.then((ips) => ({ kind: 'direct', ips, port, proxyHeader }));
    }
    case 'viaProxy':
      if (transport === 'udp') {
        connectFailed(OXY_ERR.EGRESS_BLOCKED);
        throw egressBlocked('an upstream HTTP proxy cannot carry UDP');
      }
      return { kind: 'viaProxy', proxy: decision.proxy };
    case 'packets': {
      const addr = decision.options?.addr ?? eg.target;
      try {
        return { kind: 'packets', path: packetPathFor(eg.request, addr), addr };
      } catch (e) {
        connectFailed(OXY_ERR.EGRESS_NO_PACKET_PATH);
        throw e;
      }
    }
    default:
      throw rt.hookFailed(
        'EgressHook.handleConnection',
        new TypeError(`unknown egress decision kind ${JSON.stringify((decision as { kind: unknown }).kind)}`),
      );
  }
}

/** Runs `f`, counting a failure (sync or async) as a failed connect. */
function guardFailure<T>(f: () => T | Promise<T>): T | Promise<T> {
  let r: T | Promise<T>;
  try {
    r = f();
  } catch (e) {
    connectFailed(isOxyError(e) ? e.code : 'unknown');
    throw e;
  }
  if (!(r instanceof Promise)) return r;
  return r.catch((e: unknown) => {
    connectFailed(isOxyError(e) ? e.code : 'unknown');
    throw e;
  });
}

/**
 * `ips` without the address the client reached this proxy on (`ingress.local`, same port and
 * transport), and on an endpoint listening on every address (`0.0.0.0`, `::`) without
 * loopback at that port too: connecting there is a loop, which a header's destination or a
 * target pointing back at the endpoint would otherwise run until descriptors or ports ran out
 * (a tcp endpoint that sends PROXY headers opens a connection to itself per connection it
 * accepts). Throws `OXY_ERR_EGRESS_BLOCKED`, counted, when nothing else is left.
 */
function notSelf(eg: EgressState, ips: string[], port: number, transport: Transport): string[] {
  const local = eg.ingress.local;
  if (local.port !== port) return ips;
  // Only like transports loop: UDP to a TCP endpoint's port number reaches another socket.
  const protocol = eg.ingress.endpoint.settings.protocol;
  if ((transport === 'udp') !== (protocol === 'udp' || protocol === 'ip_gue')) return ips;
  const addr = eg.ingress.endpoint.addr;
  const listening = addr.kind === 'tcp' && isWildcard(addr.host) ? addr.host : local.host;
  const others = ips.filter((ip) => !reachesListener(listening, ip));
  if (others.length === ips.length) return ips;
  if (others.length > 0) return others;
  connectFailed(OXY_ERR.EGRESS_BLOCKED);
  const own = unmappedIp(local.host);
  throw egressBlocked(`${formatHostPort(own, port)} is where this connection reached the proxy: a loop`);
}

/** Counts a failed upstream connect by error code (every connector reports here). */
export function connectFailed(code: string): void {
  egressMetrics.connect_failed_total({ code }).inc();
}

/** Observes a successful connect's latency from `started` (every connector reports here). */
export function connectObserved(started: number): void {
  egressMetrics.connect_latency_seconds().observe((performance.now() - started) / 1000);
}

/**
 * Connects a byte stream along `route`: a direct TCP connection (the override or Happy
 * Eyeballs) or a CONNECT through the upstream proxy, then `handleConnectionEstablished`.
 * `signal` (the client left) aborts the connect under way, its socket destroyed: the promise
 * rejects with `OXY_ERR_ABORTED`. An `EgressDecision.packets` path and `tcpConnectOverride`
 * take no signal: the wait for them stops, and the socket they bring later is destroyed.
 */
export async function connectStream(
  rt: Runtime,
  eg: EgressState,
  route: EgressRoute,
  signal?: AbortSignal,
): Promise<EgressConnection> {
  if (route.kind === 'direct') {
    const addr = route.select ?? { host: route.ips[0] ?? eg.target.host, port: route.port };
    const { socket, remote } = await connectDirect(
      rt,
      eg,
      addr,
      false,
      route.select === undefined ? route.ips : undefined,
      signal,
    );
    established(rt, eg, socket, remote);
    if (route.proxyHeader !== undefined) {
      let head: Buffer;
      try {
        head = proxyHeaderFor(eg, route.proxyHeader);
      } catch (e) {
        socket.destroy(); // connected already: never leave it open behind a failed unit
        throw e;
      }
      socket.write(head);
    }
    return { socket, remote, head: null };
  }
  if (route.kind === 'packets') return connectPackets(rt, eg, route, signal);
  return connectProxyTunnel(rt, eg, route.proxy, signal);
}

/**
 * A CONNECT tunnel through `proxy`. The proxy is reached as forwarded requests reach it (the
 * HTTP pool's {@link connectDirect}, trusted): its name resolved by `egress.dns` and the DNS
 * hooks, `source_addr`, `tcpConnectOverride`, and one `connect_timeout` for the connect and
 * the proxy's answer together. A failure gives the same code on both paths.
 */
async function connectProxyTunnel(
  rt: Runtime,
  eg: EgressState,
  proxy: UpstreamProxy,
  signal: AbortSignal | undefined,
): Promise<EgressConnection> {
  const started = performance.now();
  const proxyAddr = { host: proxy.host, port: proxy.port };
  const { socket, remote } = await connectDirect(rt, eg, proxyAddr, true, undefined, signal);
  const timeoutMs = Math.max(1, rt.settings.egress.connect_timeout - (performance.now() - started));
  const tunnel = await connectViaProxy(proxy, eg.target, { timeoutMs, socket, signal }).catch(
    (e: unknown) => {
      countFailed(e);
      throw e;
    },
  );
  tunnel.socket.allowHalfOpen = true;
  established(rt, eg, tunnel.socket, remote);
  return { socket: tunnel.socket, remote, head: tunnel.head.length > 0 ? tunnel.head : null };
}

/** A stream whose packets leave through the IP tunnel's off-ramp (`EgressDecision.packets`). */
async function connectPackets(
  rt: Runtime,
  eg: EgressState,
  route: Extract<EgressRoute, { kind: 'packets' }>,
  signal: AbortSignal | undefined,
): Promise<EgressConnection> {
  const started = performance.now();
  const connect = route.path.connectStream;
  if (connect === undefined) {
    connectFailed(OXY_ERR.EGRESS_NO_PACKET_PATH);
    throw noPacketPath('EgressDecision.packets: this flow carries datagrams, not a stream');
  }
  const connecting = connect(route.addr, rt.settings.egress.connect_timeout);
  const waited = signal === undefined ? connecting : untilAborted(connecting, signal, (s) => s.destroy());
  const socket = await waited.catch((e: unknown) => {
    countFailed(e);
    throw e;
  });
  connectObserved(started);
  established(rt, eg, socket, route.addr);
  return { socket, remote: route.addr, head: null };
}

/**
 * The PROXY header the off-ramp sends first: from the client (as the ingress context has it, a
 * PROXY header's source included) to the address the client connected to.
 */
export function proxyHeaderFor(eg: EgressState, out: ProxyHeaderOut): Buffer {
  const ingress = eg.ingress;
  const received = ingress.proxyHeader?.addresses;
  // The address the client connected to: a received header's destination (a chain keeps the
  // first hop's), else this connection's own local address, as HAProxy and nginx send it.
  const destination =
    received !== undefined && received !== null && received.family !== 'unix'
      ? received.destination
      : ingress.local;
  const bytes = encodeProxyHeader(
    {
      addresses: headerAddresses(ingress.client, destination),
      ...(out.version === 2 && out.tlvs !== undefined ? { tlvs: out.tlvs } : {}),
    },
    { version: out.version, ...(out.crc32c === true ? { crc32c: true } : {}) },
  );
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The addresses of an outgoing header: IPv4-mapped addresses (a dual-stack listener's IPv4
 * clients) go out as IPv4; a mixed pair as IPv6 with the IPv4 side mapped, as HAProxy does.
 * Null (UNSPEC / UNKNOWN) only when either side is not an IP address.
 */
export function headerAddresses(
  client: SocketAddr,
  destination: SocketAddr,
): { family: 'inet' | 'inet6'; source: SocketAddr; destination: SocketAddr } | null {
  const src = { host: unmappedIp(client.host), port: client.port };
  const dst = { host: unmappedIp(destination.host), port: destination.port };
  const fs = net.isIP(src.host);
  const fd = net.isIP(dst.host);
  if (fs === 0 || fd === 0) return null;
  if (fs === 4 && fd === 4) return { family: 'inet', source: src, destination: dst };
  const mapped = (a: SocketAddr) => (net.isIPv4(a.host) ? { host: `::ffff:${a.host}`, port: a.port } : a);
  return { family: 'inet6', source: mapped(src), destination: mapped(dst) };
}

/**
 * The whole pipeline for a byte stream: {@link routeEgress}, then {@link connectStream}.
 * `decisions` receives `egress:<kind>` for the audit record.
 */
export async function connectTunnelEgress(
  rt: Runtime,
  eg: EgressState,
  decisions: string[],
): Promise<EgressConnection> {
  const r = routeEgress(rt, eg, decisions, 'tcp');
  return connectStream(rt, eg, r instanceof Promise ? await r : r);
}
