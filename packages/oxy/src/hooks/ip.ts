/**
 * The hooks of layer 3: `IpTunnelHook` decides once per IP tunnel (a SEQPACKET connection, a
 * GUE tunnel, a CONNECT-IP stream) from the context the tunnel opened with, and `IpFlowHook`
 * decides once per flow inside it (5-tuple: TCP, UDP, ICMP echo, other protocols) and may look
 * at, rewrite or drop every packet.
 *
 * Order per tunnel: `IngressHook.handleConnection` → `IpTunnelHook.handleTunnel(context)` (the
 * tunnel's packets wait, bounded, until it answers) → per new flow `IpFlowHook.handleFlow` (the
 * flow's packets wait, bounded, until it answers) → per packet, both ways, `handlePacket` → per
 * upgraded flow the egress hooks, as for a CONNECT tunnel or a datagram session → per flow end
 * `handleFlowEnd` → at the tunnel's end `IngressHook.handleConnectionClose`.
 *
 * An absent method costs nothing: without `handleFlow` the default decision is taken in the
 * same turn, without `handlePacket` no packet view is made.
 */
import type { ExtTypes, IngressContext, SocketAddr } from '../context/contexts.ts';
import type { IngressDecision } from './ingress.ts';

/** A flow as the hooks see it: fixed at its first packet. */
export interface IpFlowView {
  /** Unique within its tunnel. */
  readonly id: number;
  readonly version: 4 | 6;
  /** `tcp`, `udp`, `icmp` (v4 or v6 echo) or `other`. */
  readonly protocol: 'tcp' | 'udp' | 'icmp' | 'other';
  /** The IP protocol number (6, 17, 1, 58, …). */
  readonly protocolNumber: number;
  /** The initiator: its address and port (the echo identifier for ICMP, 0 for other protocols). */
  readonly src: SocketAddr;
  /** The destination as the client addressed it. */
  readonly dst: SocketAddr;
}

/** A flow's final counts, for `handleFlowEnd`. */
export interface IpFlowEndInfo {
  /** The decision the flow ran under: `upgrade`, `redirect`, `forward`, `drop`, `reject` or `answer`. */
  readonly decision: string;
  /** Why it ended: `idle`, `closed`, `reset`, `evicted`, `removed` or `shutdown` (the tunnel ended). */
  readonly reason: string;
  readonly packetsUp: number;
  readonly bytesUp: number;
  readonly packetsDown: number;
  readonly bytesDown: number;
  readonly durationMs: number;
}

/** What becomes of a new flow. Build one with {@link IpFlowDecision}. */
export type IpFlowDecision =
  | { readonly kind: 'upgrade' }
  | { readonly kind: 'redirect'; readonly addr: SocketAddr }
  | { readonly kind: 'forward' }
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'reject'; readonly reason: string };

/** Constructors of {@link IpFlowDecision}. */
export const IpFlowDecision = {
  /**
   * TCP: a stream in the stream runner, through the egress pipeline to the flow's destination;
   * UDP: a datagram session to it. Replies come back as IP packets. Other protocols: dropped.
   */
  upgrade: (): IpFlowDecision => UPGRADE,
  /** As `upgrade`, but the egress target is `addr` instead of the destination the client addressed. */
  redirect: (addr: SocketAddr): IpFlowDecision => ({ kind: 'redirect', addr }),
  /**
   * Sent on as IP packets to the endpoint's IP off-ramp (`endpoints.<name>.ip.offramp`); its
   * replies come back through the tunnel. Without an off-ramp the flow is rejected.
   */
  forward: (): IpFlowDecision => FORWARD,
  /** Dropped silently (counted by `reason`; keep reasons few: they are a metric label). */
  drop: (reason: string): IpFlowDecision => ({ kind: 'drop', reason }),
  /**
   * Dropped, and the client told: a TCP RST for TCP, ICMP "administratively prohibited" for the
   * rest (where RFC 1812 and RFC 4443 allow an error).
   */
  reject: (reason: string): IpFlowDecision => ({ kind: 'reject', reason }),
} as const;

const UPGRADE: IpFlowDecision = Object.freeze({ kind: 'upgrade' });
const FORWARD: IpFlowDecision = Object.freeze({ kind: 'forward' });

/** What becomes of one packet. Build one with {@link IpPacketVerdict}. */
export type IpPacketVerdict =
  | { readonly kind: 'pass' }
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'rewritten' };

/** Constructors of {@link IpPacketVerdict}. */
export const IpPacketVerdict = {
  /** Carry on as it is. */
  pass: (): IpPacketVerdict => PASS,
  /** Drop it (counted by `reason`). */
  drop: (reason: string): IpPacketVerdict => ({ kind: 'drop', reason }),
  /**
   * The hook changed bytes of the packet in place (addresses, ports, TTL, payload; not its
   * length): the framework re-reads it and fixes the IPv4 header and transport checksums.
   */
  rewritten: (): IpPacketVerdict => REWRITTEN,
} as const;

const PASS: IpPacketVerdict = Object.freeze({ kind: 'pass' });
const REWRITTEN: IpPacketVerdict = Object.freeze({ kind: 'rewritten' });

/** Which way a packet goes: `up` is client → destination. */
export type IpDirection = 'up' | 'down';

/** Hooks on IP tunnels. Every method is optional. */
export interface IpTunnelHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per IP tunnel, after `IngressHook.handleConnection`, with the context the tunnel
   * opened with: a SEQPACKET tunnel's first message, a GUE tunnel's extension fields (empty
   * for variant 1). Fill `ctx.ext` here: flow hooks and egress hooks of the tunnel see it. May
   * be async; the tunnel's packets wait (bounded) meanwhile. Return `IngressDecision.block` to
   * refuse the tunnel (a SEQPACKET connection is closed; a GUE tunnel's packets are dropped
   * until it idles out). Throwing refuses it too, logged and counted. Default: allow.
   */
  handleTunnel?(context: Uint8Array, ctx: IngressContext<X>): IngressDecision | Promise<IngressDecision>;
}

/** Hooks on the flows and packets of IP tunnels. Every method is optional. */
export interface IpFlowHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per new flow (its first packet), before any of its packets goes anywhere. May be
   * async; the flow's packets wait (at most 64) meanwhile. Throwing rejects the flow, logged and
   * counted. Default: `upgrade` for TCP and UDP, and `drop('protocol')` for the rest (ICMP
   * echo to the tunnel's gateway address is answered by Oxy before any flow exists).
   */
  handleFlow?(flow: IpFlowView, ctx: IngressContext<X>): IpFlowDecision | Promise<IpFlowDecision>;
  /**
   * Fires for every packet of a flow that is not dropped, both ways, synchronously, after
   * `handleFlow` answered: `up` before the packet is carried out, `down` before a reply is sent
   * to the client. `packet` is the whole IP packet, valid only during the call. Return a verdict
   * or `undefined` (pass). Throwing drops the packet, logged and counted. Default: every packet
   * passes and no view is made.
   */
  handlePacket?(
    packet: Buffer,
    direction: IpDirection,
    flow: IpFlowView,
    ctx: IngressContext<X>,
  ): IpPacketVerdict | undefined;
  /** Event: the flow ended (idle, closed, reset, evicted, the tunnel ended). The return value is ignored. */
  handleFlowEnd?(flow: IpFlowView, info: IpFlowEndInfo, ctx: IngressContext<X>): void;
}

/** The method names of {@link IpTunnelHook}, for validation at registration. */
export const IP_TUNNEL_HOOK_METHODS = ['handleTunnel'] as const;
/** The method names of {@link IpFlowHook}, for validation at registration. */
export const IP_FLOW_HOOK_METHODS = ['handleFlow', 'handlePacket', 'handleFlowEnd'] as const;
