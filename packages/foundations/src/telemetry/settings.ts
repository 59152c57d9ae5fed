/**
 * The `telemetry` settings section. Its defaults are a working set-up: text logs on the
 * terminal at INFO, every trace sampled (no exporter until an OTLP endpoint is turned on),
 * metrics prefixed with the service name, and the telemetry server on a free loopback port.
 * The parsed value has the shape of `TelemetrySettingsValue` (checked below at compile time).
 */
import { type Infer, s } from '../settings/index.ts';
import type { TelemetrySettingsValue } from './settings-types.ts';
import { VERBOSITIES } from './settings-types.ts';

export {
  defaultTelemetrySettings,
  type LoggingSettings,
  type MemoryProfilerSettings,
  type MetricsSettings,
  type ServerSettings,
  type TelemetryListenAddr,
  type TelemetrySettingsValue,
  type TracingSettings,
  VERBOSITIES,
  type Verbosity,
} from './settings-types.ts';

/** The `telemetry` settings schema. */
export const TelemetrySettings = s.object('Telemetry settings.', {
  logging: s.object('Logging settings.', {
    output: s.oneOf(
      'Where log records go: terminal (stdout), stderr or file.',
      ['terminal', 'stderr', 'file'] as const,
      'terminal',
    ),
    file: s.path('Log file path, used when output is file.', ''),
    format: s.oneOf(
      'Format of log records: text (one readable line) or json.',
      ['text', 'json'] as const,
      'text',
    ),
    verbosity: s.oneOf('Records below this level are dropped.', VERBOSITIES, 'INFO'),
    redact_keys: s.list(
      'Field keys whose values are replaced by [REDACTED], e.g. to keep secrets out of production logs.',
      s.str('A field key.', ''),
      [],
    ),
    rate_limit: s.enabled(
      'Caps the log records written per second so a flood of errors cannot stall the service.',
      true,
      {
        max_events_per_second: s.int(
          'Records written per second at most; the rest are dropped and counted.',
          10_000,
          { min: 1 },
        ),
      },
      'Enables the rate limit.',
    ),
  }),
  tracing: s.enabled(
    'Distributed tracing settings (OpenTelemetry).',
    true,
    {
      sampling_ratio: s.num(
        'Fraction of new traces that are sampled: 1.0 samples everything, 0.0 nothing. Stitched traces follow the upstream decision.',
        1.0,
        { min: 0, max: 1 },
      ),
      otlp: s.enabled(
        'Export of finished spans over OTLP/HTTP (JSON).',
        false,
        {
          endpoint: s.str(
            'URL of the OTLP/HTTP traces endpoint of a collector.',
            'http://127.0.0.1:4318/v1/traces',
          ),
          export_interval: s.duration('Time between two batch exports.', '5s'),
          export_timeout: s.duration(
            'Time one export may take, retries included; then its spans are dropped.',
            '10s',
          ),
          max_queue_size: s.int('Finished spans kept while waiting for export; more are dropped.', 2048, {
            min: 1,
          }),
        },
        'Enables the export.',
      ),
    },
    'Enables tracing.',
  ),
  metrics: s.object('Metrics settings (Prometheus).', {
    service_name_format: s.oneOf(
      'How the service name is applied: metric_prefix (<service>_<group>_<name>) or label_with_name (a "service" label).',
      ['metric_prefix', 'label_with_name'] as const,
      'metric_prefix',
    ),
    report_optional: s.bool('Whether metrics declared optional are reported by the telemetry server.', false),
  }),
  memory_profiler: s.enabled(
    'Sampling heap profiler of V8, served at /pprof/heap.',
    true,
    {
      sampling_interval: s.size('Average allocated bytes between two samples.', '512KiB'),
    },
    'Enables the heap profiler.',
  ),
  server: s.enabled(
    'Telemetry server: /health, /metrics, /pprof/* and routes the app adds.',
    true,
    {
      addr: s.listenAddr('Telemetry server address: host:port or a Unix socket path.', '127.0.0.1:0'),
    },
    'Enables the telemetry server.',
  ),
});

/** The parsed `telemetry` section. */
export type TelemetrySettings = Infer<typeof TelemetrySettings>;

// Compile-time check that the schema's value is what the runtime code takes.
const _schemaMatchesRuntime = (v: TelemetrySettings): TelemetrySettingsValue => v;
void _schemaMatchesRuntime;
