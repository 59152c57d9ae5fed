/**
 * Settings of the IP tunnel endpoints (`ip_seqpacket`, `ip_gue`): `endpoints.<name>.ip`, the
 * part both share (gateway addresses, flow table bounds and timeouts, the IP off-ramp), and the
 * GUE-only `gue` part. The IP pipeline reads `ip` through {@link ipSettingsOf}, which gives the
 * defaults to a tunnel on an endpoint of another kind (a CONNECT-IP stream on an `http` one).
 */
import { type Infer, s } from 'foundations/settings';
import type { EndpointSettings } from '../../settings.ts';

/** `endpoints.<name>.ip`. */
export const IpTunnelSettings = s.object(
  'The IP pipeline of each tunnel on this endpoint: gateway, flow table, off-ramp.',
  {
    gateway_v4: s.str(
      "The tunnel's IPv4 gateway address: ICMP echo to it is answered by Oxy, and ICMP errors Oxy " +
        'generates about unreachable destinations name it when the destination cannot.',
      '100.64.0.1',
    ),
    gateway_v6: s.str("The tunnel's IPv6 gateway address (as gateway_v4).", 'fd00::1'),
    mtu: s.int(
      'Largest IP packet carried out of the tunnel; a larger one is dropped and answered with ICMP ' +
        '"packet too big" (IPv6) or "fragmentation needed" (IPv4 with DF), so the client learns the path MTU.',
      65535,
      { min: 1280, max: 65535 },
    ),
    max_flows: s.int(
      'Flows tracked at once per tunnel; past it an unanswered flow is evicted, or the new one refused.',
      65536,
      { min: 1 },
    ),
    tcp_established_timeout: s.duration('An established TCP flow with no packet for this long ends.', '2h'),
    tcp_transitory_timeout: s.duration(
      'A TCP flow opening or closing (SYN sent, FIN seen) with no packet for this long ends.',
      '120s',
    ),
    udp_timeout: s.duration(
      'A UDP flow with no packet for this long ends (and its datagram session with it); one never ' +
        'answered ends after a sixth of it, at least 10s.',
      '180s',
    ),
    icmp_timeout: s.duration('An ICMP echo flow with no packet for this long ends.', '30s'),
    max_pending_packets: s.int(
      'Packets of one flow (or tunnel) held while its hook decides or its upgrade starts; more are dropped.',
      64,
      { min: 1 },
    ),
    offramp: s.optional(
      'The IP off-ramp: a SOCK_SEQPACKET path where flows decided `forward` go as IP packets, one ' +
        'connection per tunnel that speaks the ip_seqpacket protocol (a JSON context first, then ' +
        'one packet per message; packets read back are replies). ~: none (forwarded flows are rejected).',
      s.path('A SEQPACKET socket path.', '/run/oxy/ip-offramp.sock'),
    ),
  },
);
/** The value of {@link IpTunnelSettings}. */
export type IpTunnelSettings = Infer<typeof IpTunnelSettings>;

/** `endpoints.<name>.gue`. */
export const GueSettings = s.object('GUE tunnels (draft-ietf-intarea-gue-09) on this UDP endpoint.', {
  idle_timeout: s.duration('A GUE tunnel with no datagram either way for this long ends.', '5m'),
  max_tunnels: s.int('GUE tunnels open at once; datagrams of new tunnels beyond it are dropped.', 4096, {
    min: 1,
  }),
});

/** The fields of an `ip_seqpacket` endpoint, without the app's part. */
export const ipSeqpacketFields = {
  addr: s.listenAddr(
    'The SOCK_SEQPACKET Unix socket path to listen on (a host:port is refused): each connection is ' +
      'one IP tunnel, its first message the context, then one IP packet per message.',
    '/run/oxy/ip.sock',
  ),
  ip: IpTunnelSettings,
};

/** The fields of an `ip_gue` endpoint, without the app's part. */
export const ipGueFields = {
  addr: s.listenAddr(
    'UDP address to listen on (host:port): GUE datagrams, one IP tunnel per sender and extension fields.',
    '127.0.0.1:6080',
  ),
  ip: IpTunnelSettings,
  gue: GueSettings,
};

let defaults: IpTunnelSettings | null = null;

/** The `ip` settings of an endpoint: its own for an IP tunnel endpoint, else the defaults. */
export function ipSettingsOf(settings: EndpointSettings): IpTunnelSettings {
  if (settings.protocol === 'ip_seqpacket' || settings.protocol === 'ip_gue') return settings.ip;
  defaults ??= IpTunnelSettings.parse(undefined) as IpTunnelSettings;
  return defaults;
}
