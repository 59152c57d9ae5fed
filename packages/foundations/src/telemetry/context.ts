/**
 * `TelemetryContext`: the one object that carries log fields and the current trace along the
 * async call stack (an `AsyncLocalStorage`), so business code never passes a logger or a span.
 *
 * A context is a value. `with*` methods return a new context and never change the current
 * one; `apply(fn)` runs `fn` (sync or async) with it as the current context. Span-starting
 * methods (`withSpan`, `withForkedTrace`, `withTraceFrom`) are recipes: the span starts when
 * `apply` runs (or `begin`, which hands the end to the caller) and ends when `fn` returns or
 * its promise settles, so a context built but never applied leaks nothing. The one mutation is `addFields`, which changes the log fields of the
 * context it is called on (and so of everything that runs in it afterwards), never a parent's:
 * `withForkedLog()` copies the fields.
 *
 * Sampling: the decision is taken when a trace starts (a root span, a fork, or a stitch with
 * no upstream decision), with the ratio of `withSamplingRatio` if a branch set one, else
 * `telemetry.tracing.sampling_ratio`. Spans inside an unsampled trace cost no OTel object, nor
 * do sampled ones while no span processor (exporter or test capture) is attached: such a trace
 * keeps its ids and sampled flag (for logs and `traceparent`) but records nothing; its ids are
 * drawn when first read, and log fields given as a `LogFieldSource` are computed when first
 * written, so a connection that logs nothing and sends no `traceparent` pays for neither.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { type Link, type Span, type SpanContext, SpanStatusCode, TraceFlags } from '@opentelemetry/api';
import { LEVELS, type LogFieldSource, LogScope } from './log/logger.ts';
import {
  bareSampledSpanContext,
  defaultSamplingRatio,
  formatTraceparent,
  parseTraceparent,
  sample,
  setOtelErrorSink,
  spansObserved,
  startOtelSpan,
  tracingEnabled,
  unsampledSpanContext,
} from './trace/tracer.ts';

/** The trace a context is in: a recording span, or only the ids of a trace nobody records. */
interface TraceState {
  readonly span: Span | null;
  readonly sc: SpanContext;
  readonly sampled: boolean;
}

/**
 * A trace without a span object (unsampled, or sampled while nobody observes spans) whose ids
 * are drawn when first read: most connections never write a record, send a `traceparent` or
 * get a crash report, so drawing two random ids for each is wasted.
 */
class BareTrace implements TraceState {
  readonly sampled: boolean;
  /** The ids once drawn; before that, the trace id to keep (a child of a remote span), if any. */
  #ids: SpanContext | string | undefined;

  constructor(sampled: boolean, traceId: string | undefined) {
    this.sampled = sampled;
    this.#ids = traceId;
  }

  get span(): null {
    return null;
  }

  get sc(): SpanContext {
    const ids = this.#ids;
    if (typeof ids === 'object') return ids;
    const sc = this.sampled
      ? bareSampledSpanContext(ids === undefined ? null : { traceId: ids })
      : unsampledSpanContext(ids);
    this.#ids = sc;
    return sc;
  }
}

type PendingSpan =
  | { readonly kind: 'child'; readonly name: string; readonly attributes: SpanAttributes | undefined }
  | {
      readonly kind: 'fork';
      readonly name: string;
      readonly links: Link[];
      readonly sampled: boolean | undefined;
    }
  | {
      readonly kind: 'stitch';
      readonly name: string;
      readonly traceparent: string | null | undefined;
      readonly sampled: boolean | undefined;
    };

/** Attribute values accepted on spans. */
export type SpanAttributes = Record<string, string | number | boolean>;

/** Options of `withForkedTrace`. */
export interface ForkOptions {
  /** Extra links besides the one to the current trace (added automatically). */
  links?: SpanContext[];
  /** Forces the fork's sampling decision instead of inheriting or drawing it. */
  sampled?: boolean;
}

const storage = new AsyncLocalStorage<TelemetryContext>();
const NO_PENDING: readonly PendingSpan[] = [];
const NO_LINKS: Link[] = [];
/** `fork(name)`'s pending span per name (they are immutable), so a fork allocates none. */
const forkSteps = new Map<string, readonly PendingSpan[]>();
const errorContexts = new WeakMap<object, TelemetryContext>();

/** The telemetry context: log fields plus the current trace, implicit along the async call stack. */
export class TelemetryContext {
  readonly #log: LogScope;
  readonly #trace: TraceState | null;
  readonly #ratio: number | null;
  readonly #pending: readonly PendingSpan[];

  private constructor(
    log: LogScope,
    traceState: TraceState | null,
    ratio: number | null,
    pending: readonly PendingSpan[],
  ) {
    this.#log = log;
    this.#trace = traceState;
    this.#ratio = ratio;
    this.#pending = pending;
  }

  /** The context of the running code (the root context outside any `apply`). */
  static current(): TelemetryContext {
    return storage.getStore() ?? TelemetryContext.#root;
  }

  /** The process-wide root context: what `current()` is outside any `apply`. */
  static root(): TelemetryContext {
    return TelemetryContext.#root;
  }

  static readonly #root = new TelemetryContext(new LogScope(), null, null, NO_PENDING);

  /** The log fields of this context. */
  get fields(): Readonly<Record<string, unknown>> {
    return this.#log.fields;
  }

  /** @internal The log scope records are written through. */
  get log(): LogScope {
    return this.#log;
  }

  /** The recording OTel span of this context, or null (tracing off, unsampled, or no trace). */
  get span(): Span | null {
    return this.#trace?.span ?? null;
  }

  /** The trace id, if this context is in a trace (sampled or not). */
  get traceId(): string | undefined {
    return this.#trace?.sc.traceId;
  }

  /** True when this context's trace is sampled (spans in it are recorded). */
  get sampled(): boolean {
    return this.#trace?.sampled === true;
  }

  /** @internal True when this context is in a trace (its ids may not be drawn yet). */
  get inTrace(): boolean {
    return this.#trace !== null;
  }

  /** Adds fields to this context's log; they appear on every later record written in it. */
  addFields(fields: Record<string, unknown>): this {
    this.#log.add(fields);
    return this;
  }

  /** Adds the fields of `source` to this context's log, computed when a record first needs them. */
  addFieldSource(source: LogFieldSource): this {
    this.#log.addSource(source);
    return this;
  }

  /** A context whose log starts as a copy of this one's: fields added to it stay in it. */
  withForkedLog(): TelemetryContext {
    return new TelemetryContext(this.#log.fork(), this.#trace, this.#ratio, this.#pending);
  }

  /**
   * `withForkedLog().withForkedTrace(name)` plus `addFieldSource(source)`, in one step and
   * without the intermediate contexts: the fork a server makes per connection and per request.
   */
  fork(name: string, source?: LogFieldSource): TelemetryContext {
    let pending: readonly PendingSpan[];
    if (this.#pending.length === 0) {
      pending = forkSteps.get(name) ?? [];
      if (pending.length === 0) {
        pending = [{ kind: 'fork', name, links: NO_LINKS, sampled: undefined }];
        if (forkSteps.size < 64) forkSteps.set(name, pending);
      }
    } else pending = [...this.#pending, { kind: 'fork', name, links: NO_LINKS, sampled: undefined }];
    return new TelemetryContext(this.#log.fork(source), this.#trace, this.#ratio, pending);
  }

  /** A context with a child span `name` of the current span, started by `apply`. */
  withSpan(name: string, attributes?: SpanAttributes): TelemetryContext {
    return this.#plus({ kind: 'child', name, attributes });
  }

  /**
   * A context in a new trace whose root span `name` links to the current trace: one trace per
   * request on a long connection. The fork is sampled like the current trace, unless this
   * branch set a ratio (`withSamplingRatio`) or `options.sampled` says otherwise.
   */
  withForkedTrace(name: string, options?: ForkOptions): TelemetryContext {
    const links = options?.links === undefined ? NO_LINKS : options.links.map((context) => ({ context }));
    return this.#plus({ kind: 'fork', name, links, sampled: options?.sampled });
  }

  /**
   * A context that continues the trace of an incoming W3C `traceparent` header with a span
   * `name`: stitching across services. The upstream's sampled flag decides, unless
   * `options.sampled` overrides it. A missing or malformed header starts a new trace.
   */
  withTraceFrom(
    traceparent: string | null | undefined,
    name: string,
    options?: { sampled?: boolean },
  ): TelemetryContext {
    return this.#plus({ kind: 'stitch', name, traceparent, sampled: options?.sampled });
  }

  /** A context in which traces started (roots, forks, stitches without a decision) use `ratio`. */
  withSamplingRatio(ratio: number): TelemetryContext {
    return new TelemetryContext(this.#log, this.#trace, Math.min(1, Math.max(0, ratio)), this.#pending);
  }

  /** The `traceparent` to send on an outgoing call from this context, or undefined outside a trace. */
  traceparent(): string | undefined {
    return this.#trace === null ? undefined : formatTraceparent(this.#trace.sc);
  }

  #plus(p: PendingSpan): TelemetryContext {
    return new TelemetryContext(this.#log, this.#trace, this.#ratio, [...this.#pending, p]);
  }

  /**
   * Runs `fn` with this context current, starting the spans this context describes and ending
   * them when `fn` returns, throws, or its promise settles. Returns what `fn` returns.
   */
  apply<T>(fn: () => T): T {
    if (this.#pending.length === 0) return run(this, fn, null);
    if (this.#pending.length === 1) {
      // One step (a fork, a child span): no arrays unless a span is recorded.
      const next = begin(this.#pending[0] as PendingSpan, this.#trace, this.#ratio);
      const context = new TelemetryContext(this.#log, next, this.#ratio, NO_PENDING);
      const span = next !== this.#trace && next !== null ? next.span : null;
      return run(context, fn, span === null ? null : [span]);
    }
    const { context, spans } = this.startPending();
    return run(context, fn, spans.length === 0 ? null : spans);
  }

  /**
   * Starts the spans this context describes and returns the context they are current in, with
   * `end` to end them: for a lifetime that is not one function call, such as a connection
   * (`socket.on('close', () => end())`). `end(error)` marks them failed; it is idempotent.
   * Prefer `apply` when one function call is the lifetime.
   */
  begin(): { context: TelemetryContext; end(error?: unknown): void } {
    const { context, spans } = this.startPending();
    let ended = spans.length === 0;
    return {
      context,
      end(error?: unknown) {
        if (ended) return;
        ended = true;
        endSpans(spans, error);
      },
    };
  }

  /** @internal `begin` without the wrapper: the spans started, innermost last. */
  startPending(): { context: TelemetryContext; spans: Span[] } {
    let state = this.#trace;
    const spans: Span[] = [];
    for (const p of this.#pending) {
      const next = begin(p, state, this.#ratio);
      if (next !== state && next !== null && next.span !== null) spans.push(next.span);
      state = next;
    }
    return { context: new TelemetryContext(this.#log, state, this.#ratio, NO_PENDING), spans };
  }
}

function run<T>(ctx: TelemetryContext, fn: () => T, spans: Span[] | null): T {
  let result: T;
  try {
    result = storage.run(ctx, fn);
  } catch (e) {
    remember(e, ctx);
    if (spans !== null) endSpans(spans, e);
    throw e;
  }
  if (spans === null && !(result instanceof Promise)) return result;
  if (result instanceof Promise) {
    return result.then(
      (v: unknown) => {
        if (spans !== null) endSpans(spans, undefined);
        return v;
      },
      (e: unknown) => {
        remember(e, ctx);
        if (spans !== null) endSpans(spans, e);
        throw e;
      },
    ) as T;
  }
  if (spans !== null) endSpans(spans, undefined);
  return result;
}

function remember(e: unknown, ctx: TelemetryContext): void {
  if (typeof e === 'object' && e !== null && !errorContexts.has(e)) errorContexts.set(e, ctx);
}

/** @internal The context an error escaped from (through `apply`), if known. */
export function contextOfError(e: unknown): TelemetryContext | undefined {
  return typeof e === 'object' && e !== null ? errorContexts.get(e) : undefined;
}

function endSpans(spans: Span[], error: unknown): void {
  for (let i = spans.length - 1; i >= 0; i--) {
    const span = spans[i] as Span;
    if (error !== undefined) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      });
    }
    span.end();
  }
}

function state(span: Span): TraceState {
  const sc = span.spanContext();
  return { span, sc, sampled: (sc.traceFlags & TraceFlags.SAMPLED) !== 0 };
}

function unsampled(): TraceState {
  return new BareTrace(false, undefined);
}

/** A sampled span: recording when someone observes spans, else only its ids. Null: tracing off. */
function startSampled(name: string, parent: SpanContext | null, links: () => Link[]): TraceState | null {
  if (!spansObserved()) return new BareTrace(true, parent?.traceId);
  const span = startOtelSpan(name, parent, links());
  return span === null ? null : state(span);
}

const noLinks = (): Link[] => NO_LINKS;

function isSampled(t: TraceState | null): t is TraceState {
  return t?.sampled === true;
}

/** Starts one pending span on top of `current`; returns the new trace state. */
function begin(p: PendingSpan, current: TraceState | null, ratio: number | null): TraceState | null {
  if (!tracingEnabled()) return current;
  switch (p.kind) {
    case 'child': {
      if (current !== null) {
        if (current.span === null) return current; // unsampled or unobserved: no span object
        const span = startOtelSpan(p.name, current.sc, []);
        if (span !== null && p.attributes !== undefined) span.setAttributes(p.attributes);
        return span === null ? current : state(span);
      }
      if (!sample(ratio ?? defaultSamplingRatio())) return unsampled();
      const root = startSampled(p.name, null, noLinks);
      if (root?.span != null && p.attributes !== undefined) root.span.setAttributes(p.attributes);
      return root ?? current;
    }
    case 'fork': {
      const parentSampled = isSampled(current);
      const decision =
        p.sampled ??
        (ratio !== null ? sample(ratio) : current !== null ? parentSampled : sample(defaultSamplingRatio()));
      if (!decision) return unsampled();
      // The link names the parent's ids: built only when a span is recorded.
      const links = parentSampled ? () => [{ context: current.sc }, ...p.links] : () => p.links;
      return startSampled(p.name, null, links) ?? current;
    }
    case 'stitch': {
      const remote = parseTraceparent(p.traceparent);
      if (remote === null) {
        if (!(p.sampled ?? sample(ratio ?? defaultSamplingRatio()))) return unsampled();
        return startSampled(p.name, null, noLinks) ?? current;
      }
      const decision = p.sampled ?? (remote.traceFlags & TraceFlags.SAMPLED) !== 0;
      if (!decision) return { span: null, sc: { ...remote, traceFlags: TraceFlags.NONE }, sampled: false };
      return startSampled(p.name, { ...remote, traceFlags: TraceFlags.SAMPLED }, noLinks) ?? current;
    }
  }
}

/** @internal Runs `fn` in a child span `name` of the current context; the `spanFn` fast path. */
export function runInSpan<T>(name: string, fn: () => T): T {
  if (!tracingEnabled()) return fn();
  const cur = TelemetryContext.current();
  if (cur.inTrace && cur.span === null) return fn(); // unsampled or unobserved trace
  return cur.withSpan(name).apply(fn);
}

// OTel reports its own failures (an export the collector refused or could not receive) from
// timers, outside any request: they are logged as warnings in the root context.
setOtelErrorSink((e) => TelemetryContext.root().log.write(LEVELS.WARN, 'trace export failed', { err: e }));
