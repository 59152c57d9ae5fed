/**
 * `EgressHook`: how Oxy leaves for the destination. The most powerful stage: the app decides
 * where (or whether) to connect, can rewrite resolution or replace the TCP connect itself.
 *
 * Order: `handleConnection` (once per tunnel or forwarded request, before resolution, with the
 * target the client asked for); then, for each new upstream connection (a pooled one that is
 * reused skips these): `dnsResolveOverride` or the built-in resolver (names only) →
 * `handleUpstreamIps` → `egress.blocked_cidrs` check (403 when nothing is left) →
 * `tcpConnectOverride` or Happy Eyeballs → `handleConnectionEstablished`.
 * With `viaProxy` the upstream proxy resolves the target's name: the proxy's own address is
 * resolved and connected to without `handleUpstreamIps` or the `blocked_cidrs` check (it is
 * configured by the operator or the app, not chosen by the client). With `packets` nothing is
 * resolved or connected on this host's network: the flow leaves as IP packets through its IP
 * tunnel's off-ramp (`ip.offramp`), a router the operator configured, like an upstream proxy.
 * A CONNECT-IP request whose scope is a DNS name runs the resolution steps alone, once, before
 * it is answered: `dnsResolveOverride` or the resolver → `handleUpstreamIps` → `blocked_cidrs`,
 * with `ctx.target` `{ host: name, port: 0 }`; the addresses left are the tunnel's scope.
 */
import type dgram from 'node:dgram';
import type { Duplex } from 'node:stream';
import type { EgressContext, ExtTypes, SocketAddr } from '../context/contexts.ts';
import type { UpstreamProxy } from '../offramps/upstream-proxy/connect.ts';
import type { ProxyTlv } from '../protocols/proxy-protocol/types.ts';

export type { UpstreamProxy, UpstreamProxyAuth } from '../offramps/upstream-proxy/connect.ts';

/**
 * A PROXY protocol header to send the upstream before the first byte (the off-ramp), so Oxy can
 * sit in front of haproxy, nginx or another Oxy and pass the client on. The source is the
 * client (`ctx.ingress.client`), the destination the address connected to.
 */
export interface ProxyHeaderOut {
  /** 1 (text, TCP only) or 2 (binary, with TLVs). */
  readonly version: 1 | 2;
  /** v2 only (with version 1 the decision is invalid): TLVs to carry, e.g. `{ type: 'authority', value: 'example.com' }`. */
  readonly tlvs?: readonly ProxyTlv[];
  /** v2 only (with version 1 the decision is invalid): add a CRC32C TLV over the header. Default false. */
  readonly crc32c?: boolean;
}

/** Options of a direct egress decision. */
export interface DirectOptions {
  /** Send a PROXY protocol header first (TCP only; ignored for UDP). */
  readonly proxyProtocol?: ProxyHeaderOut;
}

/** Options of a packets egress decision. */
export interface PacketsOptions {
  /**
   * The destination the packets are addressed to, an IP literal. Default: the target (the
   * flow's original destination, or its `IpFlowDecision.redirect` address).
   */
  readonly addr?: SocketAddr;
}

/** Where an egress connection goes. Build one with {@link EgressDecision}. */
export type EgressDecision =
  | { readonly kind: 'direct'; readonly addr: SocketAddr; readonly options?: DirectOptions }
  | { readonly kind: 'block'; readonly reason: string }
  | { readonly kind: 'viaProxy'; readonly proxy: UpstreamProxy }
  | { readonly kind: 'packets'; readonly options?: PacketsOptions };

/** Constructors of {@link EgressDecision}. */
export const EgressDecision = {
  /**
   * Connect to `addr` (usually the target as given; a name is resolved). `options.proxyProtocol`
   * sends a PROXY header with the client's address before the first byte.
   */
  direct: (addr: SocketAddr, options?: DirectOptions): EgressDecision =>
    options === undefined ? { kind: 'direct', addr } : { kind: 'direct', addr, options },
  /** Do not connect: the client gets 403 with `reason` in the log and audit record. */
  block: (reason: string): EgressBlock => ({ kind: 'block', reason }),
  /** Go through another HTTP proxy (CONNECT for tunnels, absolute-form for plain requests). */
  viaProxy: (proxy: UpstreamProxy): EgressDecision => ({ kind: 'viaProxy', proxy }),
  /**
   * Downgrade: send the flow out as IP packets through its IP tunnel's off-ramp
   * (`endpoints.<name>.ip.offramp`) instead of connecting from this host. Only for the flows of
   * an IP tunnel (request kinds `ip-tcp` and `ip-udp`): a stream is carried to a TCP connection
   * opened inside the upgrade namespace, whose packets leave with the client's own addresses; a
   * UDP session's datagrams leave as UDP packets from the client's address. Replies come back
   * through the off-ramp. Anything else (a CONNECT, a `tcp` or `udp` endpoint, a forwarded
   * request, a tunnel without `ip.offramp`) is refused with `OXY_ERR_EGRESS_NO_PACKET_PATH`
   * (502). Not resolved, not checked against `egress.blocked_cidrs`: the off-ramp is the
   * operator's router, as an upstream proxy is. Audited as `egress:packets`.
   */
  packets: (options?: PacketsOptions): EgressDecision =>
    options === undefined ? { kind: 'packets' } : { kind: 'packets', options },
} as const;

/** A block decision: what `EgressDecision.block(reason)` builds. */
export type EgressBlock = Extract<EgressDecision, { readonly kind: 'block' }>;

/** What `handleUpstreamIps` and `dnsResolveOverride` answer: addresses, or a block with a reason. */
export type UpstreamIpsAnswer = string[] | EgressBlock;

/** Hooks on egress connections. Every method is optional. */
export interface EgressHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per tunnel and once per forwarded request, before resolution, with the target
   * the client asked for (a name or an IP). Throwing fails the request with 502. Default: `EgressDecision.direct(target)`, or
   * `viaProxy` when `egress.upstream_proxy` is enabled.
   */
  handleConnection?(target: SocketAddr, ctx: EgressContext<X>): EgressDecision | Promise<EgressDecision>;
  /**
   * Event: fires once when the upstream TCP connection is established (through the upstream
   * proxy's CONNECT, if any), with the address actually connected to. The return value is
   * ignored; throwing fails the connection. Default: nothing.
   */
  handleConnectionEstablished?(upstream: SocketAddr, ctx: EgressContext<X>): void;
  /**
   * Fires once per new upstream connection with the addresses about to be tried: those resolved
   * (or given by `dnsResolveOverride`), or the IP literal. Runs before the `blocked_cidrs`
   * check. Return the addresses to try, in order, or `EgressDecision.block(reason)` to refuse
   * with your reason (403; the reason goes to the log and audit record). An empty list blocks
   * too, with the reason "no address left to connect to". Not called for connections to an
   * upstream proxy. Also fires once for a CONNECT-IP tunnel whose scope is a DNS name, with
   * its resolved addresses (what is left becomes the scope). Default: the addresses as given.
   */
  handleUpstreamIps?(ips: string[], ctx: EgressContext<X>): UpstreamIpsAnswer | Promise<UpstreamIpsAnswer>;
  /**
   * Fires instead of the built-in resolver for each name to resolve, a CONNECT-IP scope's name
   * included (`ctx.target.port` 0). Return the addresses, `undefined` to use the built-in
   * resolver after all, or `EgressDecision.block(reason)` to refuse (403 with the reason).
   * Default: the built-in resolver (`egress.dns`, cached).
   */
  dnsResolveOverride?(
    host: string,
    ctx: EgressContext<X>,
  ): UpstreamIpsAnswer | undefined | Promise<UpstreamIpsAnswer | undefined>;
  /**
   * Fires instead of the built-in connect (Happy Eyeballs across `addrs`, `connect_timeout`,
   * `source_addr`). Return a connected stream, or `undefined` to use the built-in connect after
   * all. Default: the built-in connect.
   */
  tcpConnectOverride?(
    addrs: readonly SocketAddr[],
    ctx: EgressContext<X>,
  ): Duplex | undefined | Promise<Duplex | undefined>;
  /**
   * The UDP counterpart of `tcpConnectOverride`: fires once per datagram session (a `udp`
   * endpoint's, a CONNECT-UDP tunnel's, an IP tunnel's UDP flow) instead of the built-in
   * upstream socket (connected to the first of `addrs`, from `source_addr`), after the route
   * was decided and the addresses checked. Return a `node:dgram` socket that carries the
   * session's datagrams: connected (datagrams are sent to its peer) or not (they are sent to
   * the first of `addrs`); its `message` events are the replies, whoever sends them. Oxy closes
   * it when the session ends. Return `undefined` to use the built-in socket after all.
   * Default: the built-in socket.
   */
  udpConnectOverride?(
    addrs: readonly SocketAddr[],
    ctx: EgressContext<X>,
  ): dgram.Socket | undefined | Promise<dgram.Socket | undefined>;
  /**
   * For apps that route to a set of upstreams: fires once per new upstream TCP connection
   * (CONNECT, `tcp` endpoint, forwarded request, Upgrade; not `udp`, not through an upstream
   * proxy), after `handleConnection` chose `direct(addr)`, with that `addr`. Return the
   * candidates to connect to instead, `host:port` (`[v6]:port`) in order of preference, or
   * `undefined` to connect to `addr`. Each candidate goes through resolution,
   * `handleUpstreamIps` and the blocklist; on a failed resolution or connect the next is tried.
   * Passive health: an upstream that failed `egress.upstream_health.failures` times in a row
   * is skipped for `egress.upstream_health.cooldown` (all are tried when all are ejected). An
   * empty list blocks (403). Default: `undefined`.
   */
  selectUpstream?(
    target: SocketAddr,
    ctx: EgressContext<X>,
  ): readonly string[] | undefined | Promise<readonly string[] | undefined>;
}

/** The method names of {@link EgressHook}, for validation at registration. */
export const EGRESS_HOOK_METHODS = [
  'handleConnection',
  'handleConnectionEstablished',
  'handleUpstreamIps',
  'dnsResolveOverride',
  'tcpConnectOverride',
  'selectUpstream',
  'udpConnectOverride',
] as const;
