/**
 * Metrics of the HTTP/2 on-ramp: sessions open and streams refused before reaching a pipeline
 * (requests that did reach one are counted by the pipelines, whatever the HTTP version).
 * Handles are cached per endpoint, so the per-stream path pays no label lookup.
 */
import { type CounterHandle, counter, defineMetrics, type GaugeHandle, gauge } from 'foundations/telemetry';

/** The `http2` metric group. */
export const http2Metrics = defineMetrics('http2', {
  sessions_active: gauge<{ endpoint: string }>('Open HTTP/2 client connections (h2 and h2c).'),
  sessions_total: counter<{ endpoint: string; protocol: string }>(
    'HTTP/2 client connections served, by protocol (h2 over TLS, h2c with prior knowledge).',
  ),
  streams_refused_total: counter<{ endpoint: string; reason: string }>(
    'HTTP/2 streams answered by the on-ramp itself: malformed (400), extended CONNECT (501), ' +
      'malformed fields (RST_STREAM PROTOCOL_ERROR, `http2.strict_fields`).',
  ),
});

/** The handles one endpoint uses. */
export interface Http2EndpointMetrics {
  readonly sessionsActive: GaugeHandle;
  readonly malformed: CounterHandle;
  readonly extendedConnect: CounterHandle;
  /** Streams reset because a field was malformed (`reason="malformed_field"`). */
  readonly malformedFields: CounterHandle;
}

/** Creates the cached handles of `endpoint`. */
export function http2EndpointMetrics(endpoint: string): Http2EndpointMetrics {
  return {
    sessionsActive: http2Metrics.sessions_active({ endpoint }),
    malformed: http2Metrics.streams_refused_total({ endpoint, reason: 'malformed' }),
    extendedConnect: http2Metrics.streams_refused_total({ endpoint, reason: 'extended_connect' }),
    malformedFields: http2Metrics.streams_refused_total({ endpoint, reason: 'malformed_field' }),
  };
}
