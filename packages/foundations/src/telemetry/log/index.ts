/**
 * Module-level logging functions that write through the current `TelemetryContext`, so a
 * record carries the fields of the connection and request it was written in without any
 * logger being passed around. A record below the configured verbosity costs one compare.
 */
import { TelemetryContext } from '../context.ts';
import type { Verbosity } from '../settings-types.ts';
import { LEVELS, levelEnabled } from './logger.ts';

export { LEVELS, type LogRecord, levelEnabled, REDACTED } from './logger.ts';

/** Structured fields of a record; `err` holding an Error is serialized with its stack. */
export type LogFields = Record<string, unknown>;

/** Writes log records through the current telemetry context. */
export const log = {
  /** Very detailed tracing of the program's flow. */
  trace(msg: string, fields?: LogFields): void {
    TelemetryContext.current().log.write(LEVELS.TRACE, msg, fields);
  },
  /** Information useful when debugging. */
  debug(msg: string, fields?: LogFields): void {
    TelemetryContext.current().log.write(LEVELS.DEBUG, msg, fields);
  },
  /** Normal operation worth recording. */
  info(msg: string, fields?: LogFields): void {
    TelemetryContext.current().log.write(LEVELS.INFO, msg, fields);
  },
  /** Something unexpected that the service handled. */
  warn(msg: string, fields?: LogFields): void {
    TelemetryContext.current().log.write(LEVELS.WARN, msg, fields);
  },
  /** A failure: an operation did not complete. */
  error(msg: string, fields?: LogFields): void {
    TelemetryContext.current().log.write(LEVELS.ERROR, msg, fields);
  },
  /** True when records at `level` are written: guard costly field building with it. */
  enabled(level: Verbosity): boolean {
    return levelEnabled(level);
  },
} as const;
