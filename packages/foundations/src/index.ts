/**
 * Foundations: what turns a program into a production service, usable on its own.
 *
 * Each part has its own entry point, so a service loads only what it uses:
 * `foundations/settings`, `foundations/cli`, `foundations/telemetry` (and
 * `foundations/telemetry/testing`), `foundations/security`, `foundations/restart`.
 * This root entry re-exports the parts most services touch, plus the error catalogue.
 */

export { runService } from './cli/index.ts';
export { FND_ERR, FoundationsError, type FoundationsErrorCode, isFoundationsError } from './errors.ts';
export { TaskTracker } from './restart/index.ts';
export type { ServiceInfo } from './service-info.ts';
export {
  defaultSettings,
  generateYaml,
  type Infer,
  loadSettings,
  s,
  toJsonSchema,
} from './settings/index.ts';
export { defineMetrics, initTelemetry, log, spanFn, TelemetryContext } from './telemetry/index.ts';
