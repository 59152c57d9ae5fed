/**
 * Metrics of the PROXY protocol on-ramp: headers accepted by version, headers refused by reason.
 * A module of its own (not `telemetry/metrics.ts`) so the on-ramp owns its metrics. Names come
 * out as `<service>_proxy_protocol_headers_total` and `<service>_proxy_protocol_rejected_total`.
 */
import { counter, defineMetrics } from 'foundations/telemetry';
import type { ProxyReason, ProxyVersion } from '../../protocols/proxy-protocol/index.ts';

/** The `proxy_protocol` metric group. */
export const proxyProtocolMetrics = defineMetrics('proxy_protocol', {
  headers_total: counter<{ endpoint: string; version: string }>(
    'PROXY protocol headers accepted, by version (1, 2, spp); per connection, or per datagram on udp.',
  ),
  rejected_total: counter<{ endpoint: string; reason: string }>(
    'Connections closed or datagrams dropped for their PROXY header, by reason (bad_signature, ' +
      'too_long, bad_crc, truncated, untrusted, timeout, …).',
  ),
});

/** Counts an accepted header on `endpoint` (empty when the reader serves no endpoint). */
export function countHeader(version: ProxyVersion, endpoint = ''): void {
  proxyProtocolMetrics.headers_total({ endpoint, version: String(version) }).inc();
}

/** Counts a refused header (or an untrusted peer) on `endpoint`. */
export function countRejected(reason: ProxyReason, endpoint = ''): void {
  proxyProtocolMetrics.rejected_total({ endpoint, reason }).inc();
}
