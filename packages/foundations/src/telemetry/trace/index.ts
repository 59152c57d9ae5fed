/**
 * The tracing API over `TelemetryContext`: wrap a function in a span (`spanFn`), start an
 * explicit span (`startSpan`), continue an incoming trace (`continueTrace`) and produce the
 * `traceparent` for an outgoing call (`currentTraceparent`). All are no-ops that allocate no
 * span when tracing is disabled or the current trace is not sampled.
 */
import { type Span, SpanStatusCode } from '@opentelemetry/api';
import { runInSpan, type SpanAttributes, TelemetryContext } from '../context.ts';

/**
 * Runs `fn` in a new span `name` that continues the trace of an incoming `traceparent` header
 * (stitching); the upstream's sampling decision is kept. Malformed headers start a new trace.
 */
export function continueTrace<T>(traceparent: string | null | undefined, name: string, fn: () => T): T {
  return TelemetryContext.current().withTraceFrom(traceparent, name).apply(fn);
}

/** The `traceparent` header value for an outgoing call, or undefined outside any trace. */
export function currentTraceparent(): string | undefined {
  return TelemetryContext.current().traceparent();
}

export { formatTraceparent, parseTraceparent } from './tracer.ts';

/**
 * Wraps `fn` so that each call runs in a child span `name` of the caller's span (or in a new
 * trace when there is none), ended when `fn` returns or its promise settles. A throw or
 * rejection marks the span as an error.
 */
export function spanFn<A extends unknown[], R>(name: string, fn: (...args: A) => R): (...args: A) => R {
  return function (this: unknown, ...args: A): R {
    return runInSpan(name, () => fn.apply(this, args));
  };
}

/** A span started by `startSpan`; every method is a no-op when the span is not recorded. */
export interface ActiveSpan {
  /** The OTel span, or null when not recorded. */
  readonly span: Span | null;
  /** The context with this span current: `s.context.apply(fn)` runs `fn` inside the span. */
  readonly context: TelemetryContext;
  /** Sets attributes on the span. */
  setAttributes(attributes: SpanAttributes): void;
  /** Records an error on the span and marks it failed. */
  recordError(error: unknown): void;
  /** Ends the span (idempotent). */
  end(): void;
}

/**
 * Starts a child span of the current span (or a new trace) that the caller ends explicitly;
 * prefer `spanFn` when the span matches one function call.
 */
export function startSpan(name: string, attributes?: SpanAttributes): ActiveSpan {
  const { context, spans } = TelemetryContext.current().withSpan(name, attributes).startPending();
  const s = spans[0] ?? null;
  let ended = false;
  return {
    span: s,
    context,
    setAttributes(a) {
      s?.setAttributes(a);
    },
    recordError(error) {
      if (s === null) return;
      s.recordException(error instanceof Error ? error : String(error));
      s.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      });
    },
    end() {
      if (ended) return;
      ended = true;
      s?.end();
    },
  };
}
