/**
 * Service telemetry: logs (pino), traces (OpenTelemetry) and metrics (prom-client) behind one
 * implicit `TelemetryContext`, plus the telemetry server and crash reporting.
 *
 * Ordering rules:
 * 1. `initTelemetry` first, before the service accepts work: it configures logging, then
 *    tracing, then metric names (re-creating metrics used before, at zero), then starts the
 *    heap sampler, installs the crash handler and starts the server. Each part can also be
 *    configured alone (tests do).
 * 2. Metrics are declared at module load with `defineMetrics`; they pick up the service name
 *    when `initTelemetry` runs.
 * 3. `shutdown()` last: it stops the server, flushes spans to the exporter and flushes logs.
 */
import type { ServiceInfo } from '../service-info.ts';
import { log } from './log/index.ts';
import { configureLogging, flushLogs } from './log/logger.ts';
import { configureMetrics } from './metrics/define.ts';
import { startProcessMetrics } from './metrics/registry.ts';
import { startHeapSampling, stopProfiling } from './server/profiling.ts';
import { TelemetryServer } from './server/server.ts';
import { defaultTelemetrySettings, type TelemetrySettingsValue } from './settings-types.ts';
import { configureTracing, shutdownTracing } from './trace/tracer.ts';

export { type ForkOptions, type SpanAttributes, TelemetryContext } from './context.ts';

import { type CrashHandlerOptions, installCrashHandler } from './crash.ts';

export { type CrashHandlerOptions, type CrashReport, installCrashHandler } from './crash.ts';
export { type LogFields, log } from './log/index.ts';
export { configureLogging, flushLogs, type LogFieldSource } from './log/logger.ts';
export {
  type CounterHandle,
  configureMetrics,
  counter,
  defineMetrics,
  type GaugeHandle,
  gauge,
  type HistogramHandle,
  histogram,
  type LabelValue,
  type MetricAccessor,
  type MetricGroup,
  type MetricSpec,
} from './metrics/define.ts';
export { METRICS_CONTENT_TYPE, metricsAsJson, renderMetrics } from './metrics/registry.ts';
export type { RouteHandler, TelemetryRequest, TelemetryResponse } from './server/server.ts';
export { TelemetryServer } from './server/server.ts';
export * from './settings.ts';
export {
  type ActiveSpan,
  continueTrace,
  currentTraceparent,
  formatTraceparent,
  parseTraceparent,
  spanFn,
  startSpan,
} from './trace/index.ts';
export { configureTracing, flushTracing } from './trace/tracer.ts';

/** Telemetry once initialised. */
export interface Telemetry {
  /** The telemetry server, or null when `telemetry.server.enabled` is false. */
  readonly server: TelemetryServer | null;
  /** Stops the server and profilers, exports pending spans and flushes logs. */
  shutdown(): Promise<void>;
}

/** Options of `initTelemetry` that are code, not settings. */
export interface TelemetryOptions {
  /**
   * Crash reporting (`installCrashHandler`): installed by default; pass options to forward
   * crashes (e.g. to Sentry), or `false` where something else owns the process's crash
   * handling (a test runner).
   */
  crash?: CrashHandlerOptions | false;
}

/**
 * Configures logs, traces and metrics from `settings`, installs the crash handler and starts
 * the telemetry server.
 */
export async function initTelemetry(
  info: ServiceInfo,
  settings: TelemetrySettingsValue = defaultTelemetrySettings(),
  options: TelemetryOptions = {},
): Promise<Telemetry> {
  configureLogging(settings.logging, info.name);
  await configureTracing(settings.tracing, info.name);
  configureMetrics({
    service: info.name,
    format: settings.metrics.service_name_format,
    reportOptional: settings.metrics.report_optional,
  });
  startProcessMetrics();
  if (settings.memory_profiler.enabled) await startHeapSampling(settings.memory_profiler.sampling_interval);
  const uninstallCrashHandler = options.crash === false ? null : installCrashHandler(options.crash);
  const server = settings.server.enabled ? await TelemetryServer.start(settings.server.addr) : null;
  // With the default port 0 this line is the only way an operator learns where /metrics is.
  if (server !== null) {
    const a = server.address();
    log.info('telemetry server listening', { addr: a.kind === 'unix' ? a.path : server.url() });
  }
  let done: Promise<void> | null = null;
  return {
    server,
    shutdown() {
      done ??= (async () => {
        uninstallCrashHandler?.();
        await server?.close();
        await stopProfiling();
        await shutdownTracing();
        flushLogs();
      })();
      return done;
    },
  };
}
