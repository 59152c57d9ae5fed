/**
 * The parsed shape of `telemetry.*` settings, as plain types. The runtime code of telemetry
 * depends only on these, so it can be used (and tested) without going through a settings
 * file; `settings.ts` builds the zod schema whose parsed value has this shape, and
 * `defaultTelemetrySettings()` gives the same defaults for piecemeal use.
 */

/** Where a TCP or Unix socket listener binds (the `s.listenAddr` value shape). */
export type TelemetryListenAddr =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** Log verbosity names, lowest first. */
export const VERBOSITIES = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'] as const;
/** A log verbosity. */
export type Verbosity = (typeof VERBOSITIES)[number];

/** `telemetry.logging`. */
export interface LoggingSettings {
  /** `terminal` (stdout), `stderr` or `file` (see `file`). */
  output: 'terminal' | 'stderr' | 'file';
  /** Log file path, used when `output` is `file`. */
  file: string;
  /** `text` (one human-readable line) or `json` (one JSON object per line). */
  format: 'text' | 'json';
  /** Records below this level are dropped at the call site. */
  verbosity: Verbosity;
  /** Field keys whose values are replaced by `[REDACTED]`. */
  redact_keys: string[];
  /** Caps the records written per second so a flood of errors cannot stall the service. */
  rate_limit: { enabled: boolean; max_events_per_second: number };
}

/** `telemetry.tracing`. */
export interface TracingSettings {
  /** Whether spans are recorded at all. */
  enabled: boolean;
  /** Fraction of new traces that are sampled, 0.0 to 1.0. */
  sampling_ratio: number;
  /** OTLP/HTTP export of finished spans. */
  otlp: {
    enabled: boolean;
    /** Collector URL, e.g. `http://127.0.0.1:4318/v1/traces`. */
    endpoint: string;
    /** Milliseconds between batch exports. */
    export_interval: number;
    /** Milliseconds one export may take, retries included. */
    export_timeout: number;
    /** Spans kept in memory while waiting for export; more are dropped. */
    max_queue_size: number;
  };
}

/** `telemetry.metrics`. */
export interface MetricsSettings {
  /** `metric_prefix`: `<service>_<group>_<name>`; `label_with_name`: a `service` label. */
  service_name_format: 'metric_prefix' | 'label_with_name';
  /** Whether metrics declared `optional` are reported by `/metrics`. */
  report_optional: boolean;
}

/** `telemetry.memory_profiler`. */
export interface MemoryProfilerSettings {
  /** Keeps V8's sampling heap profiler running so `/pprof/heap` has data. */
  enabled: boolean;
  /** Average bytes between two sampled allocations. */
  sampling_interval: number;
}

/** `telemetry.server`. */
export interface ServerSettings {
  enabled: boolean;
  /** `host:port` or a Unix socket path. */
  addr: TelemetryListenAddr;
}

/** The parsed value of the `telemetry` settings section. */
export interface TelemetrySettingsValue {
  logging: LoggingSettings;
  tracing: TracingSettings;
  metrics: MetricsSettings;
  memory_profiler: MemoryProfilerSettings;
  server: ServerSettings;
}

/** The defaults, identical to the schema's; a fresh object on each call. */
export function defaultTelemetrySettings(): TelemetrySettingsValue {
  return {
    logging: {
      output: 'terminal',
      file: '',
      format: 'text',
      verbosity: 'INFO',
      redact_keys: [],
      rate_limit: { enabled: true, max_events_per_second: 10_000 },
    },
    tracing: {
      enabled: true,
      sampling_ratio: 1.0,
      otlp: {
        enabled: false,
        endpoint: 'http://127.0.0.1:4318/v1/traces',
        export_interval: 5000,
        export_timeout: 10_000,
        max_queue_size: 2048,
      },
    },
    metrics: { service_name_format: 'metric_prefix', report_optional: false },
    memory_profiler: { enabled: true, sampling_interval: 512 * 1024 },
    server: { enabled: true, addr: { kind: 'tcp', host: '127.0.0.1', port: 0 } },
  };
}
