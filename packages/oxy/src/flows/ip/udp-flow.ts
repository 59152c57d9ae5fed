/**
 * The IP→UDP upgrade, in user space: a UDP flow of an IP tunnel becomes a datagram session in
 * the datagram runner (`flows/datagram/session.ts`), so it goes through the same egress route
 * as a `udp` endpoint's client (decision, DNS, `handleUpstreamIps`, `blocked_cidrs`, a connected
 * socket, `DatagramHook`, metrics, one `udp_session` audit record with kind `ip-udp`), and each
 * reply datagram is downgraded back to a UDP/IP packet (`buildUdpPacket`) from the address the
 * client wrote to.
 *
 * Ordering rule: the tunnel's connection ran its ingress and tunnel hooks before any flow; the
 * session carries a request of its own and never runs them again, nor the close hook.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import { type IngressConnection, RequestState } from '../../context/state.ts';
import { type PacketPath, setPacketPath } from '../../egress/packets.ts';
import { buildUdpPacket } from '../../protocols/ip/builder.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { type DatagramIngress, DatagramSession } from '../datagram/session.ts';
import type { IpFlow } from './flow-tracker.ts';

/** Largest UDP payload an IPv4 packet can carry. */
const MAX_UDP_PAYLOAD = 65507;

/**
 * Opens the datagram session of UDP flow `flow` on tunnel connection `conn`, to `target` (the
 * flow's destination, or a redirect). Each reply becomes a UDP packet from the flow's
 * destination to its source, handed to `down`. `packets` is the flow's way out as IP packets
 * when its tunnel has an off-ramp (`EgressDecision.packets`), else null.
 */
export function openUdpFlow(
  rt: Runtime,
  conn: IngressConnection,
  flow: IpFlow,
  target: SocketAddr,
  down: (packet: Buffer) => void,
  now: number,
  packets: PacketPath | null = null,
): DatagramSession {
  const reply = (data: Uint8Array): void =>
    down(buildUdpPacket(flow.dst, flow.dstPort, flow.src, flow.srcPort, data));
  const ingress: DatagramIngress = {
    reply,
    replyBatch: (batch) => {
      for (let i = 0; i < batch.count; i++) reply(batch.payload(i));
    },
    ended: () => {},
  };
  conn.requests++;
  const request = new RequestState(conn, 'ip-udp', 'UDP', target, rt.ext);
  if (packets !== null) setPacketPath(request, packets);
  return forkRequest(
    request,
    () => new DatagramSession(rt, conn, target, ingress, now, MAX_UDP_PAYLOAD, { request }),
  );
}
