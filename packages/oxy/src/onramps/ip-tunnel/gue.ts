/**
 * The `ip_gue` on-ramp (the seed's unconnected tunnels): a UDP socket receiving Generic UDP
 * Encapsulation (draft-ietf-intarea-gue-09). A tunnel is keyed by what identifies it in the
 * draft's terms: the sender's address and port plus the header's extension fields (where a
 * virtual network id or other tunnel context lives; variant 1 has none), and the extension
 * fields are the tunnel's context for `IpTunnelHook.handleTunnel`. Replies go back to the
 * sender in the same variant with the same extension fields.
 *
 * Control messages (C bit) and payloads that are not IPv4 or IPv6 are dropped and counted. A
 * tunnel ends after `gue.idle_timeout` with no datagram either way; past `gue.max_tunnels`,
 * datagrams of new tunnels are dropped.
 *
 * Timers: one sweep per endpoint, at a quarter of the idle timeout; none per tunnel.
 *
 * Restarts: the socket is handed to the next process (`listeners.datagrams`), which reads it
 * once it is ready; this process then stops reading, so a tunnel's next datagram opens it anew
 * there, and the tunnels left here idle out (replies still leave through the shared socket).
 */
import net from 'node:net';
import type { Listeners } from 'foundations/restart';
import type { UdpSocket } from 'native';
import type { EndpointState } from '../../context/state.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { ipPipelineMetrics } from '../../flows/ip/metrics.ts';
import { decodeGue, encodeGue, type GueMessage } from '../../protocols/gue/codec.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import type { Runtime } from '../../runtime.ts';
import type { IpGueEndpointSettings } from '../../settings.ts';
import { bindEndpointUdp } from '../udp/bind.ts';
import { type IpTunnel, openIpTunnel } from './tunnel.ts';

/** A running `ip_gue` endpoint. */
export interface IpGueOnRamp {
  readonly socket: UdpSocket;
  address(): { host: string; port: number };
  readonly tunnelCount: number;
  drain(): Promise<void>;
  close(): void;
}

/** The largest UDP payload: 65,535 − 20 (IPv4 header) − 8, and 65,535 − 8 for IPv6. */
const MAX_UDP_PAYLOAD_V4 = 65507;
const MAX_UDP_PAYLOAD_V6 = 65527;
/** The GUE header without extension fields (variant 0; variant 1 has none at all). */
const GUE_HEADER = 4;

interface GueTunnel {
  readonly tunnel: IpTunnel;
  lastActive: number;
}

/**
 * Binds `settings.addr` (host:port); with the restart lifecycle's `listeners`, adopts the socket
 * the previous process (or systemd) handed over and hands it on at the next restart. Throws
 * `OXY_ERR_LISTEN` naming the settings key.
 */
export function openIpGueOnRamp(
  rt: Runtime,
  endpoint: EndpointState,
  settings: IpGueEndpointSettings,
  listeners?: Listeners,
): IpGueOnRamp {
  const where = `endpoints.${endpoint.name}.addr`;
  const addr = settings.addr;
  if (addr.kind !== 'tcp')
    throw new OxyError(OXY_ERR.LISTEN, `${where}: an ip_gue endpoint listens on host:port`);
  const socket = bindEndpointUdp(endpoint.name, addr.host, addr.port, 65535, listeners);
  const bound = socket.address();
  const local = { host: bound.address, port: bound.port };
  const v6 = net.isIPv6(bound.address);
  const tunnels = new Map<string, GueTunnel>();
  const idleMs = settings.gue.idle_timeout;
  const maxTunnels = settings.gue.max_tunnels;
  const drop = (reason: string) =>
    ipPipelineMetrics.packets_dropped_total({ endpoint: endpoint.name, reason }).inc();

  const open = (host: string, port: number, m: GueMessage): GueTunnel => {
    const variant = m.variant;
    const extensions = m.variant === 0 ? Buffer.from(m.extensions) : Buffer.alloc(0);
    const g: GueTunnel = {
      lastActive: performance.now(),
      tunnel: openIpTunnel(rt, endpoint, {
        peer: { host, port },
        local,
        protocol: 'ip_gue',
        context: extensions,
        // What fits one UDP datagram with the GUE header and this tunnel's extension fields.
        mtu: (v6 ? MAX_UDP_PAYLOAD_V6 : MAX_UDP_PAYLOAD_V4) - GUE_HEADER - extensions.length,
        send: (packet) => {
          g.lastActive = performance.now();
          const out = variant === 1 ? encodeGue(packet, { variant: 1 }) : encodeGue(packet, { extensions });
          const r = socket.send(out, port, host);
          return r === 'sent' || r === 'queued';
        },
      }),
    };
    return g;
  };

  socket.onBatch((batch) => {
    const now = performance.now();
    for (let i = 0; i < batch.count; i++) {
      let m: GueMessage;
      const data = batch.payload(i);
      try {
        m = decodeGue(data);
      } catch (e) {
        drop(isPacketError(e) ? e.reason : 'malformed');
        continue;
      }
      if (m.variant === 0 && (m.control || (m.protoCtype !== 4 && m.protoCtype !== 41))) {
        drop(m.control ? 'gue_control' : 'gue_protocol');
        continue;
      }
      const peer = batch.peerKey(i);
      const key =
        m.variant === 0 && m.extensions.length > 0 ? `${peer}/${m.extensions.toString('hex')}` : `${peer}`;
      let g = tunnels.get(key);
      if (g === undefined) {
        if (tunnels.size >= maxTunnels) {
          drop('too_many_tunnels');
          continue;
        }
        g = open(batch.address(i), batch.port(i), m);
        tunnels.set(key, g);
      }
      g.lastActive = now;
      // The batch's buffers are reused: the pipeline copies whatever it keeps.
      g.tunnel.fromClient(m.payload);
    }
  });

  const sweep = setInterval(
    () => {
      const cutoff = performance.now() - idleMs;
      for (const [key, g] of tunnels) {
        if (g.lastActive > cutoff) continue;
        tunnels.delete(key);
        g.tunnel.close('idle_timeout');
      }
    },
    Math.max(50, Math.floor(idleMs / 4)),
  ).unref();

  let closed = false;
  return {
    socket,
    address: () => local,
    get tunnelCount() {
      return tunnels.size;
    },
    drain: async () => {
      if (!socket.closed) socket.setReading(false);
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      for (const g of tunnels.values()) g.tunnel.close('drained');
      tunnels.clear();
      socket.close();
    },
  };
}
