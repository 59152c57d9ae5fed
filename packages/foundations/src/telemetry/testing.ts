/**
 * Telemetry assertions for tests (`foundations/telemetry/testing`): capture the log records,
 * finished spans (as a tree) and metric values that the code under test produces.
 *
 * ```ts
 * const tele = captureTelemetry();
 * after(() => tele.stop());
 * await handler();
 * assert.deepEqual(tele.logs.map((r) => r.msg), ['request served']);
 * assert.equal(tele.spans()[0]?.children[0]?.name, 'db query');
 * assert.equal(await tele.metricValue('http_requests_total', { endpoint: 'main' }), 1);
 * ```
 *
 * Capture is process-wide (there is one telemetry per process), so tests that capture should
 * not run concurrently within one file. Captures nest: while an inner one runs, it gets the log
 * records (both get spans); stopping it gives the records back to the outer one. While capturing, records go to the capture, not the
 * output, and tracing is on (with `samplingRatio`, default 1) even if it was not initialised.
 */
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { type LogRecord, resetLogRateLimit, setLogCapture } from './log/logger.ts';
import { type LabelValue, promMetric } from './metrics/define.ts';
import type { Verbosity } from './settings-types.ts';
import {
  addSpanProcessor,
  defaultSamplingRatio,
  ensureTracing,
  removeSpanProcessor,
  shutdownTracing,
  tracingEnabled,
} from './trace/tracer.ts';

export type { LogRecord } from './log/logger.ts';

/** A finished span, with the spans started inside it. */
export interface CapturedSpan {
  readonly name: string;
  readonly traceId: string;
  readonly spanId: string;
  /** The parent span id, also when the parent is in another process (stitching). */
  readonly parentSpanId: string | undefined;
  readonly attributes: Readonly<Record<string, unknown>>;
  /** Span contexts this span links to (a forked trace links to its parent trace). */
  readonly links: readonly { traceId: string; spanId: string }[];
  readonly status: 'unset' | 'ok' | 'error';
  readonly durationMs: number;
  readonly children: CapturedSpan[];
}

/** Options of `captureTelemetry`. */
export interface CaptureOptions {
  /** Lowest level captured; default TRACE. */
  verbosity?: Verbosity;
  /** Sampling ratio while capturing; default 1 (every trace). */
  samplingRatio?: number;
}

/** A running capture. */
export interface TelemetryCapture {
  /** Log records in the order written, with fields merged and redacted. */
  readonly logs: LogRecord[];
  /** Finished spans as a forest: roots first, children in start order. */
  spans(): CapturedSpan[];
  /** Number of spans started so far (finished or not). */
  startedSpans(): number;
  /**
   * The value of a counter or gauge `<group>_<name>` summed over the series whose labels
   * include `labels`; for a histogram, its sample count. Undefined if never used.
   */
  metricValue(name: string, labels?: Record<string, LabelValue>): Promise<number | undefined>;
  /** Count and sum of a histogram's series matching `labels`. */
  histogramValue(
    name: string,
    labels?: Record<string, LabelValue>,
  ): Promise<{ count: number; sum: number } | undefined>;
  /** Forgets the captured logs and spans. */
  clear(): void;
  /** Ends the capture (records go to the output again). */
  stop(): void;
  [Symbol.dispose](): void;
}

/** Starts capturing logs and spans. */
export function captureTelemetry(options: CaptureOptions = {}): TelemetryCapture {
  const logs: LogRecord[] = [];
  let finished: ReadableSpan[] = [];
  let started = 0;
  const previousRatio = defaultSamplingRatio();
  const tracingWasOn = tracingEnabled();
  const processor: SpanProcessor = {
    onStart() {
      started++;
    },
    onEnd(span) {
      finished.push(span);
    },
    forceFlush: async () => undefined,
    shutdown: async () => undefined,
  };
  ensureTracing(options.samplingRatio ?? 1);
  addSpanProcessor(processor);
  resetLogRateLimit();
  const previousCapture = setLogCapture({ fn: (r) => logs.push(r), level: options.verbosity ?? 'TRACE' });
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    setLogCapture(previousCapture);
    removeSpanProcessor(processor);
    ensureTracing(previousRatio);
    if (!tracingWasOn) void shutdownTracing(); // no exporter was started: this only turns tracing off
  };
  return {
    logs,
    spans: () => tree(finished),
    startedSpans: () => started,
    metricValue: async (name, labels) => {
      const values = await series(name, labels);
      if (values === undefined) return undefined;
      const isHistogram = values.some((v) => v.metricName?.endsWith('_count'));
      return values
        .filter((v) => !isHistogram || v.metricName?.endsWith('_count'))
        .reduce((sum, v) => sum + v.value, 0);
    },
    histogramValue: async (name, labels) => {
      const values = await series(name, labels);
      if (values === undefined) return undefined;
      let count = 0;
      let sum = 0;
      for (const v of values) {
        if (v.metricName?.endsWith('_count')) count += v.value;
        else if (v.metricName?.endsWith('_sum')) sum += v.value;
      }
      return { count, sum };
    },
    clear: () => {
      logs.length = 0;
      finished = [];
      started = 0;
    },
    stop,
    [Symbol.dispose]: stop,
  };
}

interface SeriesValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

async function series(
  name: string,
  labels: Record<string, LabelValue> = {},
): Promise<SeriesValue[] | undefined> {
  const prom = promMetric(name);
  if (prom === undefined) return undefined;
  const { values } = (await prom.get()) as { values: SeriesValue[] };
  return values.filter((v) =>
    Object.entries(labels).every(([k, want]) => String(v.labels[k]) === String(want)),
  );
}

function tree(spans: readonly ReadableSpan[]): CapturedSpan[] {
  const ordered = [...spans].sort((a, b) => hr(a.startTime) - hr(b.startTime));
  const nodes = new Map<string, CapturedSpan>();
  for (const s of ordered) {
    const sc = s.spanContext();
    nodes.set(sc.spanId, {
      name: s.name,
      traceId: sc.traceId,
      spanId: sc.spanId,
      parentSpanId: s.parentSpanContext?.spanId,
      attributes: { ...s.attributes },
      links: s.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
      status: s.status.code === 2 ? 'error' : s.status.code === 1 ? 'ok' : 'unset',
      durationMs: hr(s.duration),
      children: [],
    });
  }
  const roots: CapturedSpan[] = [];
  for (const node of nodes.values()) {
    const parent = node.parentSpanId === undefined ? undefined : nodes.get(node.parentSpanId);
    if (parent === undefined) roots.push(node);
    else parent.children.push(node);
  }
  return roots;
}

function hr(t: readonly [number, number]): number {
  return t[0] * 1e3 + t[1] / 1e6;
}
