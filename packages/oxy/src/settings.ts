/**
 * Oxy's settings: `endpoints`, `egress`, `restart`, `audit` and `telemetry`, plus the app's own
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
import { UpstreamProxySettings } from './offramps/upstream-proxy/settings.ts';
import { Http2Settings } from './onramps/http2/settings.ts';
import { TlsSettings } from './onramps/tls/settings.ts';

/** The fields of one endpoint, without the app's part. */
const endpointFields = {
  addr: s.listenAddr('Address to listen on: host:port, [v6]:port, or a Unix socket path.', '127.0.0.1:8080'),
  protocol: s.oneOf(
    'On-ramp protocol: "http" serves forward-proxy requests over HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN with tls): absolute-form, CONNECT, Upgrade.',
    ['http'] as const,
    'http',
  ),
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
  tunnel_idle_timeout: s.duration('A tunnel with no bytes either way for this long is closed.', '5m'),
  tunnel_max_lifetime: s.duration('A tunnel older than this is closed; 0s means no limit.', '0s'),
  tunnel_splice: s.bool(
    'Tunnels no hook inspects (plain TCP both sides) move their bytes in the kernel (splice(2)), on the ' +
      "native addon's thread; with no egress, response or pipeline hook the addon connects them too.",
    true,
  ),
  tls: TlsSettings,
  http2: Http2Settings,
};

const endpointDescription = 'A listening endpoint: where clients reach the proxy, and its limits.';

/** Settings of one endpoint (`endpoints.<name>`), without the app's part. */
export const EndpointSettings = s.object(endpointDescription, endpointFields);
/** The value of {@link EndpointSettings}. */
export type EndpointSettings = Infer<typeof EndpointSettings>;

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
  upstream_proxy: UpstreamProxySettings,
  dns: DnsSettings,
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

type OutputOf<T> = T extends z.ZodType ? z.output<T> : null;

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
    schemas.endpoint === undefined
      ? EndpointSettings
      : s.object(endpointDescription, { ...endpointFields, app: schemas.endpoint });
  return s.object(`Settings of ${name}.`, {
    ...rootFields,
    restart: restartSettings(name),
    endpoints: s.map('Listening endpoints by name.', endpoint, { main: {} }),
    ...(schemas.app === undefined ? {} : { app: schemas.app }),
  });
}
