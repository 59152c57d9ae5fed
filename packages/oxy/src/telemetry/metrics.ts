/**
 * Oxy's metrics, declared as typed groups (the label types are checked by the compiler). Names
 * come out as `<service>_<group>_<name>`, e.g. `oxy_ingress_connections_active`.
 *
 * Hot-path rule: a labelled accessor costs a string join and a map lookup, so code on the
 * per-request path caches the handles it uses per endpoint (see `EndpointMetrics`) instead of
 * calling the accessor each time.
 */
import { counter, defineMetrics, gauge, histogram } from 'foundations/telemetry';

/** Ingress connections. */
export const ingressMetrics = defineMetrics('ingress', {
  connections_active: gauge<{ endpoint: string }>('Open client connections.'),
  connections_total: counter<{ endpoint: string }>('Client connections accepted.'),
  connections_failed_total: counter<{ endpoint: string; reason: string }>(
    'Client connections that failed or were refused (blocked, bad request, hook failure, timeout).',
  ),
});

/** HTTP requests (absolute-form, Upgrade and CONNECT). */
export const httpMetrics = defineMetrics('http', {
  requests_total: counter<{ endpoint: string; kind: string }>(
    'Requests received, by kind (forward, connect, upgrade).',
  ),
  requests_failed_total: counter<{ endpoint: string; status: number }>(
    'Requests the proxy answered with an error status itself (not errors relayed from upstream).',
  ),
});

/** Tunnels (CONNECT and Upgrade). */
export const tunnelMetrics = defineMetrics('tunnel', {
  bytes_total: counter<{ endpoint: string; kind: string; direction: 'up' | 'down' }>(
    'Bytes moved through tunnels, by endpoint and request kind (connect, upgrade, tcp, ip-tcp, …): up = client to upstream.',
  ),
  duration_seconds: histogram<{ endpoint: string; kind: string }>(
    'How long tunnels lasted; its count is the tunnels ended.',
    {
      buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    },
  ),
});

/** Egress connections. */
export const egressMetrics = defineMetrics('egress', {
  connect_latency_seconds: histogram('Time to establish an upstream connection, decision and DNS included.', {
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  }),
  connect_failed_total: counter<{ code: string }>(
    'Upstream connections that failed or were blocked, by error code.',
  ),
});

/** DNS cache. */
export const dnsMetrics = defineMetrics('dns', {
  cache_hits_total: counter('Names answered from the DNS cache.'),
  cache_misses_total: counter('Names the DNS cache could not answer.'),
});

/** App hooks. */
export const hookMetrics = defineMetrics('hooks', {
  failures_total: counter<{ hook: string }>('App hook calls that threw or rejected.'),
});

/** Datagram sessions (`udp` endpoints, and later CONNECT-UDP and upgraded UDP flows). */
export const datagramMetrics = defineMetrics('udp', {
  sessions_active: gauge<{ endpoint: string }>('Open datagram sessions.'),
  sessions_total: counter<{ endpoint: string }>('Datagram sessions opened.'),
  datagrams_total: counter<{ endpoint: string; direction: 'up' | 'down' }>(
    'Datagrams forwarded through sessions (up = client to upstream); open sessions are added every second.',
  ),
  bytes_total: counter<{ endpoint: string; direction: 'up' | 'down' }>(
    'Payload bytes forwarded through sessions; open sessions are added every second.',
  ),
  dropped_total: counter<{ endpoint: string; reason: string }>(
    'Datagrams dropped: refused session, too many sessions, too large (either way), a hook, a full queue.',
  ),
  upstream_errors_total: counter<{ endpoint: string; code: string }>(
    "Errors on sessions' upstream sockets, mostly ICMP reports: ECONNREFUSED (nothing listens at " +
      'the target), EHOSTUNREACH, ENETUNREACH. The session goes on until it idles out.',
  ),
  session_duration_seconds: histogram<{ endpoint: string }>('How long datagram sessions lasted.', {
    buckets: [0.01, 0.1, 1, 5, 15, 60, 300, 900, 3600],
  }),
});

/** The audit log writer (`audit.output: file`). */
export const auditMetrics = defineMetrics('audit', {
  records_written_total: counter('Audit records written to the file.'),
  records_dropped_total: counter(
    'Audit records lost: the buffer was full while the file could not be written, or the sink was closed.',
  ),
  write_errors_total: counter('Audit file writes that failed (they are retried).'),
  buffered_bytes: gauge('Bytes of audit records waiting to be written.'),
});
