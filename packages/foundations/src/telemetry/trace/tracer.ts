/**
 * The OpenTelemetry side of tracing: one tracer provider per process, the sampling decision,
 * and the W3C `traceparent` codec.
 *
 * Foundations takes the sampling decision itself, before any span exists: an unsampled trace
 * never allocates an OTel span (it is carried as a bare span context so it can still be
 * propagated with its "not sampled" flag). The provider therefore samples everything it is
 * asked to create. Span processors are multiplexed here so tests can attach a capture
 * processor at any time (the SDK 2.x only takes processors at construction).
 */
import {
  type Context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  RandomIdGenerator,
  type ReadableSpan,
  type Span as SdkSpan,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { TracingSettings } from '../settings-types.ts';

const processors = new Set<SpanProcessor>();

/** Fans span events out to the processors attached at the moment. */
const multiplex: SpanProcessor = {
  onStart(span: SdkSpan, parent: Context) {
    for (const p of processors) p.onStart(span, parent);
  },
  onEnd(span: ReadableSpan) {
    for (const p of processors) p.onEnd(span);
  },
  async forceFlush() {
    await Promise.all([...processors].map((p) => p.forceFlush()));
  },
  async shutdown() {
    await Promise.all([...processors].map((p) => p.shutdown()));
  },
};

let provider: BasicTracerProvider | null = null;
let tracer: Tracer | null = null;
let exportProcessor: SpanProcessor | null = null;
let globalRatio = 1;
const ids = new RandomIdGenerator();

/** Attaches a span processor (tests attach a capture processor this way). */
export function addSpanProcessor(p: SpanProcessor): void {
  processors.add(p);
}

/** Detaches a processor added with `addSpanProcessor`. */
export function removeSpanProcessor(p: SpanProcessor): void {
  processors.delete(p);
}

/**
 * (Re)configures tracing. With `enabled: false` no span is ever created and every tracing
 * call is a cheap no-op. Returns once the previous exporter (if any) has been shut down.
 */
export async function configureTracing(cfg: TracingSettings, serviceName: string): Promise<void> {
  await shutdownTracing();
  globalRatio = clampRatio(cfg.sampling_ratio);
  if (!cfg.enabled) return;
  if (cfg.otlp.enabled) {
    setGlobalErrorHandler(reportOtelError);
    const exporter = new OTLPTraceExporter({
      url: cfg.otlp.endpoint,
      timeoutMillis: cfg.otlp.export_timeout,
    });
    exportProcessor = new BatchSpanProcessor(exporter, {
      scheduledDelayMillis: cfg.otlp.export_interval,
      exportTimeoutMillis: cfg.otlp.export_timeout,
      maxQueueSize: cfg.otlp.max_queue_size,
    });
    processors.add(exportProcessor);
  }
  startProvider(serviceName);
}

/** Where OTel's own failures (e.g. an export the collector refused) go; set by the log module. */
let otelErrorSink: (e: unknown) => void = () => undefined;

/** @internal Routes OTel errors (failed exports) to `sink`, e.g. a warning log record. */
export function setOtelErrorSink(sink: (e: unknown) => void): void {
  otelErrorSink = sink;
}

function reportOtelError(e: unknown): void {
  otelErrorSink(e);
}

function startProvider(serviceName: string): void {
  provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    sampler: new AlwaysOnSampler(),
    spanProcessors: [multiplex],
  });
  tracer = provider.getTracer('foundations');
}

/** Turns tracing on with the given ratio and no exporter, unless it is already on (tests). */
export function ensureTracing(ratio: number, serviceName = 'test'): void {
  globalRatio = clampRatio(ratio);
  if (tracer === null) startProvider(serviceName);
}

/** Sends queued spans to the exporter now. A failed export is logged, never thrown. */
export async function flushTracing(): Promise<void> {
  try {
    await exportProcessor?.forceFlush();
  } catch (e) {
    reportOtelError(e); // boundary: telemetry failures must not fail the caller
  }
}

/** Flushes and stops the exporter; tracing is disabled afterwards until reconfigured. */
export async function shutdownTracing(): Promise<void> {
  const p = exportProcessor;
  exportProcessor = null;
  tracer = null;
  provider = null;
  if (p !== null) {
    processors.delete(p);
    try {
      await p.shutdown();
    } catch (e) {
      reportOtelError(e); // boundary: the last export failed; say so and go on shutting down
    }
  }
}

/** True when spans may be created at all. */
export function tracingEnabled(): boolean {
  return tracer !== null;
}

/** The configured `sampling_ratio`. */
export function defaultSamplingRatio(): number {
  return globalRatio;
}

function clampRatio(r: number): number {
  return Number.isFinite(r) ? Math.min(1, Math.max(0, r)) : 1;
}

/** One sampling decision at `ratio` (0 never, 1 always). */
export function sample(ratio: number): boolean {
  return ratio >= 1 || (ratio > 0 && Math.random() < ratio);
}

/** Starts a recording span: a root when `parent` is null, else a child of `parent`. */
export function startOtelSpan(name: string, parent: SpanContext | null, links: Link[]): Span | null {
  if (tracer === null) return null;
  if (parent === null) return tracer.startSpan(name, { root: true, links }, ROOT_CONTEXT);
  return tracer.startSpan(name, { links }, trace.setSpanContext(ROOT_CONTEXT, parent));
}

/**
 * True when a recorded span would reach someone: an exporter or a test's capture processor.
 * With none attached (tracing on, OTLP off: the default), sampled traces carry only their ids.
 */
export function spansObserved(): boolean {
  return processors.size > 0;
}

/** A span context for a sampled trace whose spans nobody records: ids and the flag, no span object. */
export function bareSampledSpanContext(parent: Pick<SpanContext, 'traceId'> | null): SpanContext {
  return {
    traceId: parent?.traceId ?? ids.generateTraceId(),
    spanId: ids.generateSpanId(),
    traceFlags: TraceFlags.SAMPLED,
  };
}

/** A span context for a trace that is not sampled: valid ids, no span object. */
export function unsampledSpanContext(traceId?: string): SpanContext {
  return {
    traceId: traceId ?? ids.generateTraceId(),
    spanId: ids.generateSpanId(),
    traceFlags: TraceFlags.NONE,
  };
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Parses a W3C `traceparent` header (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
 * Returns null for anything malformed, an all-zero id, or version `ff`, as the spec says a
 * receiver must then start a new trace.
 */
export function parseTraceparent(header: string | null | undefined): SpanContext | null {
  if (typeof header !== 'string') return null;
  const m = TRACEPARENT.exec(header.trim());
  if (m === null) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & TraceFlags.SAMPLED, isRemote: true };
}

/** Formats a span context as a `traceparent` header value. */
export function formatTraceparent(sc: SpanContext): string {
  const flags = sc.traceFlags & TraceFlags.SAMPLED ? '01' : '00';
  return `00-${sc.traceId}-${sc.spanId}-${flags}`;
}
