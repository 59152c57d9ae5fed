/**
 * Metrics of CONNECT-IP tunnels (RFC 9484) on `http` endpoints: tunnels open and served, the
 * address pool, and IP packets each way with the reasons packets were dropped (outside the
 * tunnel's address or scope, malformed, a slow client, no pipeline for them).
 */
import { counter, defineMetrics, gauge } from 'foundations/telemetry';

/** The `connect_ip` metric group. */
export const connectIpMetrics = defineMetrics('connect_ip', {
  tunnels_active: gauge<{ endpoint: string }>('Open CONNECT-IP tunnels.'),
  tunnels_total: counter<{ endpoint: string }>('CONNECT-IP tunnels accepted (2xx sent).'),
  pool_exhausted_total: counter<{ endpoint: string }>(
    'CONNECT-IP requests refused with 503 because the address pool had no free address.',
  ),
  pool_leased: gauge<{ endpoint: string }>('Addresses of the CONNECT-IP pool leased to open tunnels.'),
  packets_total: counter<{ direction: 'up' | 'down' }>(
    'IP packets carried by CONNECT-IP tunnels (up = client to the pipeline).',
  ),
  packets_dropped_total: counter<{ reason: string }>(
    'IP packets dropped: source not the assigned address, destination or protocol outside the ' +
      'scope, malformed, a context other than 0, a slow client (queue full), no pipeline.',
  ),
});
