/**
 * Oxy's settings: `endpoints`, `egress`, `interception`, `restart`, `audit` and `telemetry`, plus the app's own
 * section (`app`) and per-endpoint app settings (`endpoints.<name>.app`) when the app defines
 * them. One schema, so `oxy --generate` writes one annotated config with all of it, and the
 * default config is a working forward proxy on 127.0.0.1:8080.
 *
 * Ordering rule: the schema is built once per app (`buildSettingsSchema`) before the CLI parses
 * anything, because the app's sections are part of it.
 */

import { restartSettings } from 'foundations/restart';
import { SecuritySettings } from 'foundations/security';
import { type Infer, s } from 'foundations/settings';
import { TelemetrySettings } from 'foundations/telemetry';
import { WorkersSetting } from 'foundations/workers';
import type { z } from 'zod';
import { DnsSettings } from './dns/settings.ts';
import { DEFAULT_BLOCKED_CIDRS } from './offramps/tcp/blocklist.ts';
import { UpstreamTlsSettings } from './offramps/tls/settings.ts';
import { UpstreamProxySettings } from './offramps/upstream-proxy/settings.ts';
import { Http2Settings } from './onramps/http2/settings.ts';
import { ipGueFields, ipSeqpacketFields } from './onramps/ip-tunnel/settings.ts';
import { MasqueSettings } from './onramps/masque/settings.ts';
import { ProxyProtocolDatagramSettings, ProxyProtocolSettings } from './onramps/proxy-protocol/settings.ts';
import { TlsSettings } from './onramps/tls/settings.ts';
import { InterceptionSettings } from './tunnels/tls-intercept/settings.ts';

/** The limits of byte-stream units (tunnels), for the endpoints that carry them. */
const streamFields = {
  tunnel_idle_timeout: s.duration(
    'A tunnel with no bytes either way for this long is closed (checked at this interval, so between one and two of it after the last byte); 0s means no limit.',
    '5m',
  ),
  tunnel_max_lifetime: s.duration('A tunnel older than this is closed; 0s means no limit.', '0s'),
  tunnel_splice: s.bool(
    'Tunnels no hook inspects (plain TCP both sides) move their bytes in the kernel (splice(2)), on the ' +
      "native addon's thread; with no hook between connect and splice, the addon connects them too.",
    true,
  ),
  tunnel_half_close: s.bool(
    "When the upstream ends its side of a tunnel first (its FIN), carry the client's side on until the " +
      'client ends it too (TCP half-close; for a target that only shut its writing). false, as nginx ' +
      "stream's default and RFC 9110's CONNECT: once everything the upstream sent, and its FIN, has " +
      "gone out to the client, both connections close, and the client's later bytes are refused " +
      '(RST): the client is spared a half-open wait and each short connection a wake-up. A client ' +
      'that ends first is carried as a half-close either way (its FIN goes up, the answer comes back).',
    false,
  ),
};

/**
 * TCP_QUICKACK off on an endpoint's listening socket (HAProxy's tcp-smart-accept): on by default
 * for both kinds. On an `http` endpoint the kernel's own bound applies (40 ms, as HAProxy's HTTP
 * mode); on a `tcp` endpoint only where the addon carries every connection, which bounds the hold.
 */
function smartAcceptField(kind: 'http' | 'tcp') {
  const bound =
    kind === 'http'
      ? "the kernel sends it anyway after 40 ms without an answer (a client that waits for that ACK before writing more, Nagle's algorithm with two small writes, waits that long once)"
      : 'the ACK goes anyway once Oxy has had nothing to do for 1 ms, and at the latest after 10 ms (OXY_ACK_HOLD_MS), so a client that waits for it before writing more waits no longer. It applies where the native addon carries every connection (no hook per connection, no PROXY protocol); elsewhere the ACK goes at once';
  return s.bool(
    "The ACK of a client's bytes waits for the answer to carry it, one packet less per exchange; " +
      `${bound}. Set on the listening socket, so every accepted connection inherits it.`,
    true,
  );
}

/** How an endpoint's accepted TCP connections send (`http` and `tcp` endpoints). */
const congestionFields = {
  tcp_congestion_control: s.str(
    "TCP congestion control of the endpoint's accepted connections, which paces what Oxy sends to " +
      'clients (a download through a tunnel, a response). Empty: the system default ' +
      '(net.ipv4.tcp_congestion_control). A name from net.ipv4.tcp_allowed_congestion_control, such as ' +
      'cubic or bbr; set on the listening socket, so every accepted connection inherits it.',
    '',
  ),
};

/** The fields of an `http` endpoint, without the app's part. */
const httpFields = {
  addr: s.listenAddr('Address to listen on: host:port, [v6]:port, or a Unix socket path.', '127.0.0.1:8080'),
  header_read_timeout: s.duration(
    'Time allowed to receive a whole request head; slower clients get 408 and are closed (slowloris).',
    '10s',
  ),
  idle_timeout: s.duration('How long a keep-alive client connection may sit idle between requests.', '60s'),
  body_read_timeout: s.duration(
    'Longest wait for the next piece of a request body (HTTP/1.1 and HTTP/2); a stalled body gets 408 ' +
      '(or its response is cut) and its upstream request is dropped. 0s means no limit.',
    '30s',
  ),
  max_header_size: s.size('Largest request head accepted; a larger one is answered 431.', '16KiB'),
  max_request_body: s.size(
    'Largest request body forwarded (HTTP/1.1 and HTTP/2, counted as received); a declared or streamed ' +
      'larger one is answered 413 and its upstream request dropped. 0 means no limit.',
    '0B',
  ),
  max_response_body: s.size(
    'Largest response body relayed, counted as received from upstream: a larger declared one is ' +
      'answered 502, a longer streamed one is cut (HTTP/1.1 connection closed, HTTP/2 stream reset). ' +
      '0 means no limit.',
    '0B',
  ),
  ...streamFields,
  tunnel_smart_connect: s.bool(
    "A CONNECT tunnel's upstream handshake ACK waits for the client's first tunneled bytes to " +
      "carry it (HAProxy's tcp-smart-connect), as a tcp endpoint's tcp.smart_connect: one packet " +
      'less per tunnel, and the upstream finds the connection and its first bytes together. It ' +
      'goes anyway once Oxy has had nothing to do for 1 ms, at the latest after 10 ms, and at ' +
      'once on an endpoint whose clients let it go without bytes twice in a row (targets that ' +
      'speak first) but for one tunnel in 64. Applies where the native addon connects the tunnel.',
    true,
  ),
  ...congestionFields,
  tcp_smart_accept: smartAcceptField('http'),
  proxy_protocol: ProxyProtocolSettings,
  tls: TlsSettings,
  http2: Http2Settings,
  masque: MasqueSettings,
};

/** The fields of a `tcp` endpoint, without the app's part. */
const tcpFields = {
  addr: s.listenAddr('Address to listen on: host:port, [v6]:port, or a Unix socket path.', '127.0.0.1:8080'),
  tcp: s.object('Raw TCP forwarding: each accepted connection is a tunnel to a target.', {
    target: s.optional(
      'Where each connection goes, as "host:port" (a name is resolved per connection). ~: the ' +
        'destination of the PROXY protocol header, or whatever EgressHook.handleConnection decides ' +
        '(a connection with neither is refused). egress.blocked_cidrs applies: its default refuses ' +
        'loopback and the private ranges.',
      s.socketAddr('The target, host:port or [v6]:port.', '127.0.0.1:80'),
    ),
    send_proxy_protocol: s.oneOf(
      'A PROXY protocol header sent to the target before the first byte, carrying the client (a ' +
        "received header's source when there is one), as HAProxy's send-proxy and nginx's " +
        'proxy_protocol on: "off", "v1" (text) or "v2" (binary). An EgressHook decision with its own ' +
        'proxyProtocol option replaces it; through egress.upstream_proxy none is sent.',
      ['off', 'v1', 'v2'] as const,
      'off',
    ),
    smart_connect: s.bool(
      "The handshake's last ACK to the target waits for the client's first bytes to carry it " +
        "(HAProxy's tcp-smart-connect): one packet less per connection, and the target finds the " +
        'connection and its first bytes together. It goes anyway once Oxy has had nothing to do for ' +
        '1 ms, at the latest after 10 ms, and at once for an endpoint whose clients let it go ' +
        'without bytes twice in a row (servers that speak first, such as SSH and SMTP) but for one ' +
        'connection in 64. Applies where the native addon connects.',
      true,
    ),
  }),
  ...streamFields,
  ...congestionFields,
  tcp_smart_accept: smartAcceptField('tcp'),
  proxy_protocol: ProxyProtocolSettings,
};

/** The fields of a `udp` endpoint, without the app's part. */
const udpFields = {
  addr: s.listenAddr('Address to listen on: host:port or [v6]:port (UDP).', '127.0.0.1:8053'),
  udp: s.object(
    'UDP forwarding: datagrams are grouped in sessions by client address, one upstream socket each.',
    {
      target: s.optional(
        'Where each session goes, as "host:port" (a name is resolved per session). ~: the destination ' +
          'of the PROXY protocol header, or whatever EgressHook.handleConnection decides (a session ' +
          'with neither is dropped). egress.blocked_cidrs applies: its default refuses loopback and ' +
          'the private ranges.',
        s.socketAddr('The target, host:port or [v6]:port.', '127.0.0.1:53'),
      ),
      idle_timeout: s.duration('A session with no datagram either way for this long ends; above 0s.', '60s'),
      max_sessions: s.int(
        'Sessions open at once on this endpoint; datagrams of new clients beyond it are dropped.',
        10000,
        {
          min: 1,
        },
      ),
      max_datagram_size: s.size(
        "Largest datagram carried each way, 1B to 65535B; a client's datagram is measured with its PROXY " +
          'header, a reply without the one added to it. Larger ones are dropped and counted.',
        65507,
      ),
    },
  ),
  proxy_protocol: ProxyProtocolDatagramSettings,
};

const endpointDescription =
  'A listening endpoint: where clients reach the proxy, what it speaks, and its limits.';
const protocolDescription =
  'On-ramp protocol. "http": forward-proxy requests over HTTP/1.1 and HTTP/2 (h2c prior knowledge, ' +
  'or ALPN with tls): absolute-form, CONNECT, Upgrade. "tcp": every connection is a tunnel to tcp.target. ' +
  '"udp": datagram sessions to udp.target. "ip_seqpacket": IP tunnels over a SOCK_SEQPACKET Unix ' +
  'socket. "ip_gue": IP tunnels over GUE (UDP). Each protocol has its own keys.';

/** The endpoint kinds and their fields, with the app's part `app` when it has one. */
function endpointSchema<A extends Record<string, z.ZodType>>(app: A) {
  return s.variants(
    endpointDescription,
    'protocol',
    protocolDescription,
    {
      http: { ...httpFields, ...app },
      tcp: { ...tcpFields, ...app },
      udp: { ...udpFields, ...app },
      // Upgraded TCP flows are tunnels in the stream runner: the stream limits apply to them.
      ip_seqpacket: { ...ipSeqpacketFields, ...streamFields, ...app },
      ip_gue: { ...ipGueFields, ...streamFields, ...app },
    },
    'http',
  );
}

/** Settings of one endpoint (`endpoints.<name>`), without the app's part. */
export const EndpointSettings = endpointSchema({});
/** The value of {@link EndpointSettings}: one of the endpoint kinds, told apart by `protocol`. */
export type EndpointSettings = Infer<typeof EndpointSettings>;
/** The settings of an `http` endpoint. */
export type HttpEndpointSettings = Extract<EndpointSettings, { readonly protocol: 'http' }>;
/** `settings` as an `http` endpoint's; the HTTP on-ramps are created for those only. */
export function httpEndpoint(settings: EndpointSettings): HttpEndpointSettings {
  if (settings.protocol !== 'http') throw new TypeError(`not an http endpoint: ${settings.protocol}`);
  return settings;
}

let httpDefaults: HttpEndpointSettings | null = null;

/**
 * The HTTP settings that apply to HTTP read on `settings`' endpoint: its own for an `http`
 * endpoint, the defaults for the others (HTTP parsed inside a `tcp` endpoint's stream or an
 * upgraded IP flow, when a `TunnelHook.handleTunnelStart` says so).
 */
export function httpSettingsOf(settings: EndpointSettings): HttpEndpointSettings {
  if (settings.protocol === 'http') return settings;
  httpDefaults ??= httpEndpoint(EndpointSettings.parse({ protocol: 'http' }) as EndpointSettings);
  return httpDefaults;
}

/** The settings of a `tcp` endpoint. */
export type TcpEndpointSettings = Extract<EndpointSettings, { readonly protocol: 'tcp' }>;
/** The settings of a `udp` endpoint. */
export type UdpEndpointSettings = Extract<EndpointSettings, { readonly protocol: 'udp' }>;

/** The settings of an `ip_seqpacket` endpoint. */
export type IpSeqpacketEndpointSettings = Extract<EndpointSettings, { readonly protocol: 'ip_seqpacket' }>;
/** The settings of an `ip_gue` endpoint. */
export type IpGueEndpointSettings = Extract<EndpointSettings, { readonly protocol: 'ip_gue' }>;

/** `egress`: how the proxy connects out. */
export const EgressSettings = s.object('How the proxy connects to destinations.', {
  blocked_cidrs: s.cidrList(
    'Destinations refused with 403, checked after DNS resolution (a name resolving into a range is blocked too). ' +
      'Default: loopback, private (RFC 1918), link-local, CGNAT, unspecified, multicast and IPv6 ULA ranges.',
    DEFAULT_BLOCKED_CIDRS,
  ),
  connect_timeout: s.duration(
    'Time allowed to connect upstream (all Happy Eyeballs attempts); then 504.',
    '10s',
  ),
  source_addr: s.optional(
    'Local address to connect from (an IP of this host); ~ lets the kernel choose.',
    s.str('A local IP address.', '0.0.0.0'),
  ),
  response_timeout: s.duration(
    "Longest wait for a forwarded request's response head once the request was sent (then 504), and " +
      'longest time a response body may make no progress (then it is cut); the upstream connection is ' +
      'closed either way. 0s means no limit.',
    '60s',
  ),
  pool_idle_timeout: s.duration('How long an idle upstream HTTP connection is kept for reuse.', '4s'),
  pool_max_idle: s.int(
    'Idle upstream HTTP connections kept per origin (and per client when egress hooks are installed).',
    1024,
    {
      min: 0,
    },
  ),
  upstream_health: s.object(
    'Passive health of the upstreams an app names with `EgressHook.selectUpstream`: an upstream whose ' +
      'connects failed `failures` times in a row is skipped for `cooldown` (unless every candidate is).',
    {
      failures: s.int('Consecutive connect failures that eject an upstream.', 3, { min: 1 }),
      cooldown: s.duration('How long an ejected upstream is skipped.', '10s'),
    },
  ),
  upstream_proxy: UpstreamProxySettings,
  dns: DnsSettings,
  tls: UpstreamTlsSettings,
});
/** The value of {@link EgressSettings}. */
export type EgressSettings = Infer<typeof EgressSettings>;

/** `audit`: one record per tunnel and per request. */
export const AuditSettings = s.object('Audit log: one JSON record per tunnel and per request when it ends.', {
  output: s.oneOf(
    'Where records go: off, stdout, or the file at `path`.',
    ['off', 'stdout', 'file'] as const,
    'off',
  ),
  path: s.path('The audit file when output is "file" (appended to).', 'oxy-audit.log'),
  max_buffer: s.size(
    'Records held in memory while the file cannot be written (disk full); past this, records are ' +
      'dropped and counted in oxy_audit_records_dropped_total.',
    '16MiB',
  ),
  retry_interval: s.duration(
    'How often a failed audit write is retried on a reopened file, and how often the file is checked ' +
      'for a rename or removal (logrotate) and reopened.',
    '1s',
  ),
});
/** The value of {@link AuditSettings}. */
export type AuditSettings = Infer<typeof AuditSettings>;

const rootFields = {
  telemetry: TelemetrySettings,
  endpoints: s.map('Listening endpoints by name.', EndpointSettings, { main: {} }),
  workers: WorkersSetting,
  egress: EgressSettings,
  interception: InterceptionSettings,
  restart: restartSettings('oxy'),
  audit: AuditSettings,
  security: SecuritySettings,
};

/** Oxy's settings schema for an app without settings of its own. */
export const OxySettings = s.object('Oxy settings.', rootFields);
/** The value of {@link OxySettings}. */
export type OxySettings = Infer<typeof OxySettings>;

/** The app's own schemas: a section `app`, and a part of each endpoint `endpoints.<name>.app`. */
export interface AppSettingsSchemas {
  readonly app?: z.ZodType;
  readonly endpoint?: z.ZodType;
}

/** The value a settings schema parses to, or `null` where the app defines none. */
export type OutputOf<T> = T extends z.ZodType ? z.output<T> : null;

/** The settings an app's `start()` receives: Oxy's, with the app's sections typed. */
export type AppSettings<S extends AppSettingsSchemas = AppSettingsSchemas> = Omit<
  OxySettings,
  'endpoints'
> & {
  readonly endpoints: Record<string, EndpointSettings & { readonly app: OutputOf<S['endpoint']> }>;
  readonly app: OutputOf<S['app']>;
};

/**
 * The settings schema for app `name`: Oxy's sections plus `app` and `endpoints.<name>.app` when
 * the app defines them (settings without them get `app: null`). The restart socket's default
 * path is per app name, so two apps on one host do not collide.
 */
export function buildSettingsSchema(schemas: AppSettingsSchemas = {}, name = 'oxy'): z.ZodType {
  const endpoint =
    schemas.endpoint === undefined ? EndpointSettings : endpointSchema({ app: schemas.endpoint });
  return s.object(`Settings of ${name}.`, {
    ...rootFields,
    restart: restartSettings(name),
    endpoints: s.map('Listening endpoints by name.', endpoint, { main: {} }),
    ...(schemas.app === undefined ? {} : { app: schemas.app }),
  });
}
