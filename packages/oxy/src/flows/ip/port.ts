/**
 * The seam between the IP pipeline of one tunnel and the parts that send packets back through
 * it: the on-ramps (SEQPACKET, GUE, CONNECT-IP) implement {@link IpTunnelPort}, and the IP→TCP
 * upgrade service ({@link TcpUpgrade}, `tcp-upgrade.ts`) writes the kernel's reply segments to
 * it. Only types live here, so both sides can be built apart.
 *
 * Ordering rule: a port is made by its on-ramp before `openIpPipeline`, and `closed` turns true
 * before the pipeline's `close` runs; `send` after that drops the packet (counted).
 */
import type { SocketAddr } from '../../context/contexts.ts';
import type { IngressConnection } from '../../context/state.ts';
import type { IpPacket } from '../../protocols/ip/packet.ts';

/** One IP tunnel as the IP pipeline's parts see it: where reply packets go, and whose they are. */
export interface IpTunnelPort {
  /** Unique in the process for the tunnel's life. */
  readonly id: number;
  /** The tunnel's ingress connection: hooks' ctx, audit and logs. */
  readonly ingress: IngressConnection;
  /**
   * Sends one whole IP packet to the client through the tunnel (dropped and counted when the
   * tunnel is gone or full). `packet` may be a view of a buffer the caller reuses as soon as
   * this returns (the upgrade service's TUN reads): write it or copy it before returning.
   */
  send(packet: Buffer): void;
  /** True once the tunnel ended. */
  readonly closed: boolean;
  /**
   * The tunnel's way out as IP packets for `EgressDecision.packets` (its `ip.offramp`);
   * absent when it has none.
   */
  readonly packets?: PacketsOut | undefined;
  /**
   * The largest IP packet the tunnel carries, when its carrier limits it below 65,535 (a GUE
   * datagram's room). The pipeline's port to the upgrade service carries the tunnel's MTU (the
   * smaller of this and `ip.mtu`), to which the service clamps the MSS of upgraded SYNs.
   */
  readonly mtu?: number;
}

/**
 * A tunnel's IP off-ramp as an egress connector sees it (`flows/ip/packet-egress.ts`): packets
 * out, and the replies of the flows it claimed back (matched before the tunnel's own flows).
 */
export interface PacketsOut {
  /** Sends one IP packet through the off-ramp (written or copied before this returns). */
  send(packet: Buffer): void;
  /** Delivers packets from the off-ramp whose flow key is `key` to `onPacket`, until released. */
  claim(key: string, onPacket: (packet: IpPacket) => void): void;
  /** Forgets the claim of `key` if it is still `onPacket`'s (a newer claim of the key stays). */
  release(key: string, onPacket: (packet: IpPacket) => void): void;
}

/** The IP→TCP upgrade service (flows/ip/tcp-upgrade.ts): one per process, started on first use. */
export interface TcpUpgrade {
  /** A packet (client → destination) of a TCP flow that the flow decision upgraded; replies go back through `port.send`. The kernel-accepted stream runs in the stream runner with egress target = the original destination, or `redirect` when set. */
  fromClient(port: IpTunnelPort, packet: IpPacket, redirect: SocketAddr | null): void;
  /** The tunnel ended: its flows are reset and forgotten. */
  release(port: IpTunnelPort): void;
  close(): Promise<void>;
  /**
   * The MTU of the device upgraded flows' packets go into, when below 65,535: the pipeline
   * answers larger client packets of upgraded flows with ICMP "too big" carrying it.
   */
  readonly mtu?: number;
}
