/**
 * The process's metric registries and their rendering for `/metrics`.
 *
 * Application metrics (from `defineMetrics`) live in one registry; Node/process metrics from
 * prom-client's default collectors live in another, under their standard names (dashboards
 * expect `process_*` and `nodejs_*`). prom-client's `nodejs_active_{handles,requests,resources}_total`
 * are gauges with a `_total` suffix, which `promtool check metrics` rejects; they duplicate the
 * unsuffixed gauges, so they are removed.
 *
 * The event-loop delay histogram behind `nodejs_eventloop_lag_{min,max,mean,…}_seconds` samples
 * with a libuv timer; prom-client's default (every 10 ms) woke an idle process 100 times a
 * second. It samples every EVENT_LOOP_SAMPLE_MS instead: those gauges are then that interval
 * plus the delay (as they were 10 ms plus it before), and `nodejs_eventloop_lag_seconds`
 * (measured at each scrape) is unchanged.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';

/** Application metrics (those declared with `defineMetrics`). */
export const appRegistry = new Registry();
const processRegistry = new Registry();
let processMetricsStarted = false;
/** How often the event-loop delay histogram samples (ms): an idle process wakes this often. */
const EVENT_LOOP_SAMPLE_MS = 500;

const LINT_REJECTED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** Starts collecting process and Node runtime metrics (idempotent). */
export function startProcessMetrics(): void {
  if (processMetricsStarted) return;
  processMetricsStarted = true;
  collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  for (const name of LINT_REJECTED_DEFAULTS) processRegistry.removeSingleMetric(name);
}

/** Puts a `service` label on every metric (the `label_with_name` format), or removes it. */
export function setServiceLabel(service: string | null): void {
  const labels = service === null ? {} : { service };
  appRegistry.setDefaultLabels(labels);
  processRegistry.setDefaultLabels(labels);
}

/** The content type of `renderMetrics()`. */
export const METRICS_CONTENT_TYPE = appRegistry.contentType;

/** All metrics in the Prometheus text exposition format. */
export async function renderMetrics(): Promise<string> {
  const [app, proc] = await Promise.all([appRegistry.metrics(), processRegistry.metrics()]);
  if (app === '') return proc;
  if (proc === '') return app;
  return `${app.endsWith('\n') ? app : `${app}\n`}${proc}`;
}

/**
 * All metrics as prom-client's JSON (`Registry#getMetricsAsJSON`), application metrics first:
 * what a worker process sends its supervisor, which aggregates them (`foundations/workers`).
 */
export async function metricsAsJson(): Promise<unknown[]> {
  const [app, proc] = await Promise.all([appRegistry.getMetricsAsJSON(), processRegistry.getMetricsAsJSON()]);
  return [...app, ...proc];
}
