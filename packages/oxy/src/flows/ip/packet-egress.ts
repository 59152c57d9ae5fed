/**
 * `EgressDecision.packets` for the flows of an IP tunnel: the tunnel's IP off-ramp as an egress
 * connector. The pipeline offers its off-ramp connection as a {@link PacketsOut} (the port's
 * `packets`); a UDP flow's session sends each datagram as a UDP packet from the client's own
 * address and port ({@link datagramPath}); the upgrade service carries a TCP stream to a
 * connection opened inside its namespace whose packets leave the same way (`tcp-downgrade.ts`).
 *
 * Ordering rules:
 * 1. Replies from the off-ramp are matched to the claims first ({@link PacketClaims}), then to
 *    the tunnel's forwarded flows: a claimed flow has the same 5-tuple as the client's flow it
 *    came from (the packets carry the client's addresses), so the claim must win.
 * 2. A claim lasts until its session or connection ends; a reply after that is the tunnel's
 *    (and, being no forwarded flow's, dropped as `unsolicited`).
 */
import { counter, defineMetrics, gauge } from 'foundations/telemetry';
import type { SocketAddr } from '../../context/contexts.ts';
import { type DatagramPackets, noPacketPath, type PacketPath } from '../../egress/packets.ts';
import { parseIcmp, parseQuoted } from '../../protocols/icmp/icmp.ts';
import { addressBytes } from '../../protocols/ip/address.ts';
import { buildUdpPacket } from '../../protocols/ip/builder.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import { udpPayload } from '../../protocols/udp/header.ts';
import { packetFlowKey, reverseFlowKey } from './flow-key.ts';
import type { PacketsOut } from './port.ts';

/** Metrics of flows sent out as packets by an egress decision (per flow, never per packet but drops). */
export const packetEgressMetrics = defineMetrics('ip_packet_egress', {
  flows_total: counter<{ protocol: 'tcp' | 'udp' }>(
    'Flows an EgressDecision.packets sent out through the IP off-ramp (TCP: downgrade connections opened).',
  ),
  flows_active: gauge<{ protocol: 'tcp' | 'udp' }>('Flows sent out as packets now.'),
  packets_dropped_total: counter<{ reason: string }>(
    'Packets of those flows dropped: malformed replies, device_error (the namespace TUN refused a reply).',
  ),
});

/** The flow key of packets from `src`:`sport` to `dst`:`dport` (same family), as `flow-key.ts` builds it. */
export function addressKey(src: Buffer, sport: number, dst: Buffer, dport: number, protocol: number): string {
  return src.toString('latin1') + dst.toString('latin1') + String.fromCharCode(protocol, sport, dport);
}

/** The claims of one tunnel's off-ramp connection: flow key → where its packets go. */
export class PacketClaims {
  readonly #byKey = new Map<string, (packet: IpPacket) => void>();

  get size(): number {
    return this.#byKey.size;
  }

  claim(key: string, onPacket: (packet: IpPacket) => void): void {
    this.#byKey.set(key, onPacket);
  }

  release(key: string, onPacket: (packet: IpPacket) => void): void {
    if (this.#byKey.get(key) === onPacket) this.#byKey.delete(key);
  }

  /**
   * Hands `p` to its claim; false when no claim has its key. An ICMP error goes to the claim of
   * the flow it quotes (a packet that flow sent, so the claim's key is the quoted one reversed).
   */
  deliver(p: IpPacket): boolean {
    if (this.#byKey.size === 0 || p.fragment !== null) return false;
    const icmp = p.protocol === (p.version === 4 ? IP_PROTO.ICMP : IP_PROTO.ICMPV6);
    const key = icmp ? quotedReplyKey(p) : packetFlowKey(p);
    const to = key === null ? undefined : this.#byKey.get(key);
    if (to === undefined) return false;
    to(p);
    return true;
  }
}

/** The reply key of the packet an ICMP error quotes, or null when `p` quotes none (or is malformed). */
function quotedReplyKey(p: IpPacket): string | null {
  try {
    const msg = parseIcmp(p);
    if (!msg.isError) return null;
    const q = parseQuoted(p, msg);
    if (q.srcPort < 0) return null;
    return reverseFlowKey(q.ip.buf, q.ip.srcOffset, q.ip.addrLength, q.ip.protocol, q.srcPort, q.dstPort);
  } catch (e) {
    if (isPacketError(e)) return null;
    throw e;
  }
}

/**
 * The packet path of a UDP flow from `client`:`clientPort`: each datagram leaves as a UDP packet
 * from the client's address to the decided destination, and replies (the reverse 5-tuple) come
 * back as payloads. `onDrop` counts a reply that does not parse as UDP.
 */
export function datagramPath(
  out: PacketsOut,
  client: Buffer,
  clientPort: number,
  onDrop: (reason: string) => void,
): PacketPath {
  return {
    openDatagrams(addr: SocketAddr, onReply: (data: Buffer) => void): DatagramPackets {
      const dst = addressBytes(addr.host);
      if (dst.length !== client.length)
        throw noPacketPath(`EgressDecision.packets: ${addr.host} is not of the client's address family`);
      const key = addressKey(dst, addr.port, client, clientPort, IP_PROTO.UDP);
      let open = true;
      const onPacket = (p: IpPacket): void => {
        if (p.protocol !== IP_PROTO.UDP) {
          // An ICMP error about the flow: a UDP session goes on until it idles out, as with a socket.
          packetEgressMetrics.packets_dropped_total({ reason: 'icmp_error' }).inc();
          return;
        }
        let payload: Buffer;
        try {
          payload = udpPayload(p);
        } catch (e) {
          const reason = isPacketError(e) ? e.reason : 'malformed';
          packetEgressMetrics.packets_dropped_total({ reason }).inc();
          onDrop(reason);
          return;
        }
        onReply(payload);
      };
      out.claim(key, onPacket);
      packetEgressMetrics.flows_total({ protocol: 'udp' }).inc();
      packetEgressMetrics.flows_active({ protocol: 'udp' }).inc();
      return {
        send(data: Uint8Array): void {
          if (open) out.send(buildUdpPacket(client, clientPort, dst, addr.port, data));
        },
        close(): void {
          if (!open) return;
          open = false;
          out.release(key, onPacket);
          packetEgressMetrics.flows_active({ protocol: 'udp' }).dec();
        },
      };
    },
  };
}
