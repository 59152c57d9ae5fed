/**
 * Crash reporting: an uncaught exception or unhandled rejection is logged once, with the log
 * fields of the telemetry context it escaped from, then an app hook may forward it (to Sentry,
 * say), then the process exits non-zero. Continuing after an uncaught exception would run on
 * in an unknown state, so the handler never returns to the event loop for long.
 *
 * The context is found from the error when it escaped through `TelemetryContext.apply`
 * (recorded there), else from the async context the handler runs in (Node runs rejection
 * handlers in the promise's context).
 */
import { contextOfError, TelemetryContext } from './context.ts';
import { flushLogs, LEVELS } from './log/logger.ts';

/** What a crash hook receives. */
export interface CrashReport {
  readonly kind: 'uncaughtException' | 'unhandledRejection';
  readonly error: unknown;
  /** The log fields of the context the error came from. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** Options of `installCrashHandler`. */
export interface CrashHandlerOptions {
  /**
   * Called after the crash is logged, before exit, e.g. to forward it to Sentry
   * (`Sentry.captureException(r.error); await Sentry.flush(2000)`). Bounded by `hookTimeout`.
   */
  onCrash?: (report: CrashReport) => void | Promise<void>;
  /** Exit code; default 1. */
  exitCode?: number;
  /** Milliseconds allowed for `onCrash`; default 2000. */
  hookTimeout?: number;
}

function tracedId(ctx: TelemetryContext): string | undefined {
  return ctx.span === null ? undefined : ctx.traceId;
}

/** Installs the process-wide crash handler; returns a function that removes it. */
export function installCrashHandler(options: CrashHandlerOptions = {}): () => void {
  let crashing = false;
  const exitCode = options.exitCode ?? 1;
  const handle = (kind: CrashReport['kind'], error: unknown): void => {
    if (crashing) return; // a second failure while reporting the first: the exit is on its way
    crashing = true;
    const ctx = contextOfError(error) ?? TelemetryContext.current();
    const report: CrashReport = { kind, error, fields: { ...ctx.fields } };
    const message =
      kind === 'uncaughtException' ? 'uncaught exception, exiting' : 'unhandled promise rejection, exiting';
    ctx.log.write(LEVELS.ERROR, message, { err: error, crash: kind }, tracedId(ctx), true);
    flushLogs();
    const exit = (): never => {
      flushLogs();
      process.exit(exitCode);
    };
    if (options.onCrash === undefined) exit();
    setTimeout(exit, options.hookTimeout ?? 2000); // kept referenced: the loop must not end with exit code 0
    Promise.resolve()
      .then(() => options.onCrash?.(report))
      .then(exit, exit);
  };
  const onException = (e: unknown) => handle('uncaughtException', e);
  const onRejection = (e: unknown) => handle('unhandledRejection', e);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}
