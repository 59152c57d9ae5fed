/**
 * Module-level logging functions that write through the current `TelemetryContext`, so a
 * record carries the fields of the connection and request it was written in without any
 * logger being passed around. A record below the configured verbosity costs one compare.
 */
import { TelemetryContext } from '../context.ts';
import type { Verbosity } from '../settings-types.ts';
import { LEVELS, levelEnabled, levelPasses } from './logger.ts';

export { LEVELS, type LogRecord, levelEnabled, REDACTED } from './logger.ts';

/** Structured fields of a record; `err` holding an Error is serialized with its stack. */
export type LogFields = Record<string, unknown>;

function write(level: number, msg: string, fields: LogFields | undefined): void {
  if (!levelPasses(level)) return; // first: a record below the verbosity costs only this
  const ctx = TelemetryContext.current();
  ctx.log.write(level, msg, fields, ctx.span === null ? undefined : ctx.traceId);
}

/**
 * Writes log records through the current telemetry context. A record written in a sampled
 * trace carries its `trace_id`, so logs lead to traces.
 */
export const log = {
  /** Very detailed tracing of the program's flow. */
  trace(msg: string, fields?: LogFields): void {
    write(LEVELS.TRACE, msg, fields);
  },
  /** Information useful when debugging. */
  debug(msg: string, fields?: LogFields): void {
    write(LEVELS.DEBUG, msg, fields);
  },
  /** Normal operation worth recording. */
  info(msg: string, fields?: LogFields): void {
    write(LEVELS.INFO, msg, fields);
  },
  /** Something unexpected that the service handled. */
  warn(msg: string, fields?: LogFields): void {
    write(LEVELS.WARN, msg, fields);
  },
  /** A failure: an operation did not complete. */
  error(msg: string, fields?: LogFields): void {
    write(LEVELS.ERROR, msg, fields);
  },
  /** True when records at `level` are written: guard costly field building with it. */
  enabled(level: Verbosity): boolean {
    return levelEnabled(level);
  },
} as const;
