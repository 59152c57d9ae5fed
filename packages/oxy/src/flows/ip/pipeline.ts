/**
 * PLACEHOLDER of the IP flow pipeline, until the `l3` branch's version replaces this file at
 * merge (same exports, same contract). It exists so CONNECT-IP tunnels (`onramps/masque/`) can
 * be served and tested end to end now: it answers ICMP echo requests addressed to the tunnel's
 * gateway (the first address of the endpoint's `masque.ip_pool` prefix) and drops, and counts,
 * everything else. The real pipeline runs the flow hooks, upgrades TCP and UDP to sockets and
 * sends packets to the off-ramps.
 *
 * Ordering rules: `fromClient` gets packets that the tunnel already checked (source is the
 * assigned address, destination and protocol inside the scope); `close` is called once, when
 * the tunnel ends, after which `port.send` must not be called.
 */

import { connectIpMetrics } from '../../onramps/masque/ip-metrics.ts';
import { ipGatewaysOf } from '../../onramps/masque/ip-pool.ts';
import { formatIp } from '../../protocols/capsule/ip-address.ts';
import { echoReply } from '../../protocols/icmp/generate.ts';
import { parseIp } from '../../protocols/ip/packet.ts';
import type { Runtime } from '../../runtime.ts';
import type { IpTunnelPort } from './port.ts';

/** The IP pipeline of one tunnel. */
export interface IpPipeline {
  /** A packet from the client, already checked against its address and scope. */
  fromClient(packet: Buffer): void;
  /** The tunnel ended (`reason` is its close reason); release everything the tunnel held. */
  close(reason: string): void;
}

/**
 * Opens the pipeline of one tunnel. This placeholder (replaced by the `l3` branch) answers
 * pings to the gateway and drops the rest, counted as
 * `connect_ip_packets_dropped_total{reason="no_pipeline"}`.
 */
export function openIpPipeline(_rt: Runtime, port: IpTunnelPort): IpPipeline {
  const gateways = ipGatewaysOf(port.ingress.endpoint);
  const dropped = connectIpMetrics.packets_dropped_total({ reason: 'no_pipeline' });
  let open = true;
  return {
    fromClient(packet: Buffer): void {
      if (!open) return;
      let reply: Buffer | null = null;
      try {
        const p = parseIp(packet);
        const dst = formatIp(p.buf.subarray(p.dstOffset, p.dstOffset + p.addrLength));
        if (dst === (p.version === 4 ? gateways?.v4 : gateways?.v6)) reply = echoReply(p);
      } catch {
        // Boundary: the tunnel parsed this packet already; anything else is simply not a ping.
      }
      if (reply === null) dropped.inc();
      else if (!port.closed) port.send(reply);
    },
    close(): void {
      open = false;
    },
  };
}
