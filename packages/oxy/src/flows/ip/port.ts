// flows/ip/port.ts (copy exactly; the lead keeps l3's version)

import type { SocketAddr } from '../../context/contexts.ts';
import type { IngressConnection } from '../../context/state.ts';
import type { IpPacket } from '../../protocols/ip/packet.ts';
export interface IpTunnelPort {
  readonly id: number;
  readonly ingress: IngressConnection;
  send(packet: Buffer): void;
  readonly closed: boolean;
}
export interface TcpUpgrade {
  fromClient(port: IpTunnelPort, packet: IpPacket, redirect: SocketAddr | null): void;
  release(port: IpTunnelPort): void;
  close(): Promise<void>;
}
