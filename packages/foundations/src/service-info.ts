/**
 * Who the service is. Foundations uses it for `--version`, for the metric prefix or label
 * (`telemetry.metrics.service_name_format`), for the trace resource and for log records.
 */
export interface ServiceInfo {
  /** Short machine-friendly name, e.g. `oxy` or `http-server`; used as the metric prefix. */
  readonly name: string;
  /** Version string printed by `--version`. */
  readonly version: string;
  /** One line shown by `--help` and at the top of a generated config. */
  readonly description: string;
}
