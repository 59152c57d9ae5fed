/**
 * Typed metric groups on prom-client. A group is declared once, with a description per metric
 * and its labels as a type, so a wrong label name or value type does not compile:
 *
 * ```ts
 * const m = defineMetrics('http', {
 *   requests_total: counter<{ endpoint: string; status: number }>('Number of requests.'),
 *   active_connections: gauge('Open client connections.'),
 * });
 * m.requests_total({ endpoint: 'main', status: 200 }).inc();
 * m.active_connections().inc();
 * ```
 *
 * Names: `<service>_<group>_<name>` (`service_name_format: metric_prefix`) or `<group>_<name>`
 * with a `service` label (`label_with_name`). Names are checked against `promtool` lint rules at
 * declaration (counters end in `_total`, nothing else does), so `/metrics` always lints clean.
 *
 * Cost: the prom-client metric is created on first use (its label names come from the first
 * labels object, in sorted order). Each labelled child is cached per label-value tuple, so a
 * hot-path call is one string build (the values joined) plus one `Map` lookup; a metric without
 * labels is a property read. Handles keep their values in numbers (a histogram's: counts per
 * bucket, sum and count) and hand them to prom-client when the metric is read (its `collect`):
 * prom-client's own `inc` and `observe` hash and validate the labels on every call. Sums of
 * fractional values may differ from prom-client's in the last bits (added in another order). A metric appears in `/metrics` from its first use; call
 * the accessor once at start-up to expose a zero.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import { FND_ERR, FoundationsError } from '../../errors.ts';
import { appRegistry, setServiceLabel } from './registry.ts';

/** A label value; numbers and booleans are rendered with `String()`. */
export type LabelValue = string | number | boolean;
/** The kinds of metric a group may hold. */
export type MetricKind = 'counter' | 'gauge' | 'histogram';

/** A metric declaration: kind, description and (as a type only) its labels. */
export interface MetricSpec<K extends MetricKind, L> {
  readonly kind: K;
  readonly help: string;
  readonly optional: boolean;
  readonly buckets: readonly number[] | undefined;
  /** Phantom: carries the label type; never set. */
  readonly labelType?: L;
}

/** Options common to every metric kind. */
export interface MetricOptions {
  /** Reported by `/metrics` only when `telemetry.metrics.report_optional` is true. */
  optional?: boolean;
}

type NoLabels = Record<never, never>;
type LabelShape<L> = { [K in keyof L]: LabelValue };

/** Declares a counter (monotonic; its name must end in `_total`). */
export function counter<L extends LabelShape<L> = NoLabels>(
  help: string,
  options?: MetricOptions,
): MetricSpec<'counter', L> {
  return { kind: 'counter', help, optional: options?.optional ?? false, buckets: undefined };
}

/** Declares a gauge (a value that goes up and down). */
export function gauge<L extends LabelShape<L> = NoLabels>(
  help: string,
  options?: MetricOptions,
): MetricSpec<'gauge', L> {
  return { kind: 'gauge', help, optional: options?.optional ?? false, buckets: undefined };
}

/** Declares a histogram; `buckets` are upper bounds (default: prom-client's, in seconds). */
export function histogram<L extends LabelShape<L> = NoLabels>(
  help: string,
  options?: MetricOptions & { buckets?: readonly number[] },
): MetricSpec<'histogram', L> {
  return { kind: 'histogram', help, optional: options?.optional ?? false, buckets: options?.buckets };
}

/** What a counter accessor returns. */
export interface CounterHandle {
  inc(value?: number): void;
}
/** What a gauge accessor returns. */
export interface GaugeHandle {
  set(value: number): void;
  inc(value?: number): void;
  dec(value?: number): void;
}
/** What a histogram accessor returns. */
export interface HistogramHandle {
  observe(value: number): void;
  /** Starts a timer; calling the result observes the elapsed seconds. */
  startTimer(): () => void;
}

type HandleOf<K extends MetricKind> = K extends 'counter'
  ? CounterHandle
  : K extends 'gauge'
    ? GaugeHandle
    : HistogramHandle;

/** The accessor of one metric: no argument without labels, else exactly its labels. */
export type MetricAccessor<S> =
  S extends MetricSpec<infer K, infer L>
    ? keyof L extends never
      ? () => HandleOf<K>
      : (labels: L) => HandleOf<K>
    : never;

/** The object `defineMetrics` returns: one typed accessor per declared metric. */
export type MetricGroup<T> = { readonly [N in keyof T]: MetricAccessor<T[N]> };

type AnySpec = MetricSpec<MetricKind, unknown>;
type PromMetric = Counter<string> | Gauge<string> | Histogram<string>;
type Child = CounterHandle | GaugeHandle | HistogramHandle;

/** The part of a prom-client histogram's internals a buffered handle adds its counts to. */
interface HistogramEntry {
  labels: object;
  sum: number;
  count: number;
  bucketValues: Record<string, number>;
}
interface HistogramInternals {
  hashMap: Record<string, HistogramEntry>;
  upperBounds: readonly number[];
  zero(labels: object): void;
}

/**
 * True when this prom-client keeps histograms as `BufferedHistogram` expects (checked once on
 * a throwaway histogram): otherwise histograms use prom-client's own handles, as before.
 */
const histogramInternalsKnown = ((): boolean => {
  try {
    const probe = new Histogram({
      name: 'probe',
      help: 'probe',
      labelNames: ['a'],
      buckets: [1],
      registers: [],
    });
    const h = probe as unknown as HistogramInternals;
    const labels = { a: 'x' };
    h.zero(labels);
    const entries = Object.values(h.hashMap);
    const e = entries[0];
    return (
      entries.length === 1 &&
      e?.labels === labels &&
      e.sum === 0 &&
      e.count === 0 &&
      e.bucketValues[1] === 0 &&
      Array.isArray(h.upperBounds) &&
      h.upperBounds[0] === 1
    );
  } catch {
    return false; // Boundary: another prom-client layout; fall back to its own handles.
  }
})();

/**
 * A histogram's observations between two reads: counts per bucket, sum and count, added to
 * prom-client's series when the metric is read. prom-client's `observe` builds a closure, a
 * labels object and a hash per call.
 */
class BufferedHistogram implements HistogramHandle {
  readonly #prom: Histogram<string>;
  readonly #labels: Record<string, string>;
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;
  #entry: HistogramEntry | null = null;

  constructor(prom: Histogram<string>, labels: Record<string, string>) {
    this.#prom = prom;
    this.#labels = labels;
    this.#bounds = (prom as unknown as HistogramInternals).upperBounds;
    this.#counts = this.#bounds.map(() => 0);
  }

  observe(value: number): void {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      this.#prom.observe(this.#labels, value); // throws its TypeError
      return;
    }
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        (this.#counts[i] as number)++;
        break;
      }
    }
    this.#sum += value;
    this.#count++;
  }

  startTimer(): () => void {
    const start = performance.now();
    return () => this.observe((performance.now() - start) / 1000);
  }

  /** Adds the observations to prom-client's series for these labels. */
  flush(): void {
    if (this.#count === 0) return;
    const h = this.#prom as unknown as HistogramInternals;
    let entry = this.#entry;
    if (entry === null || !Object.values(h.hashMap).includes(entry)) {
      entry = Object.values(h.hashMap).find((e) => sameLabels(e.labels, this.#labels)) ?? null;
      if (entry === null) {
        h.zero(this.#labels);
        entry = Object.values(h.hashMap).find((e) => e.labels === this.#labels) ?? null;
      }
      this.#entry = entry;
    }
    if (entry === null) return;
    entry.sum += this.#sum;
    entry.count += this.#count;
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      const n = this.#counts[i] as number;
      if (n !== 0) {
        entry.bucketValues[bounds[i] as number] = (entry.bucketValues[bounds[i] as number] ?? 0) + n;
        this.#counts[i] = 0;
      }
    }
    this.#sum = 0;
    this.#count = 0;
  }
}

function sameLabels(a: object, b: Record<string, string>): boolean {
  const x = a as Record<string, unknown>;
  const keys = Object.keys(b);
  if (Object.keys(x).length !== keys.length) return false;
  for (const k of keys) if (String(x[k]) !== b[k]) return false;
  return true;
}

/**
 * A counter's or gauge's value between two reads of the metric: `inc`/`dec`/`set` change a
 * number, and `flush` (run by prom-client's `collect` before every read) passes it on. Values
 * prom-client would refuse are passed to it at once, so it throws the same errors.
 */
class Buffered implements CounterHandle, GaugeHandle {
  readonly #prom: Counter<string> | Gauge<string>;
  readonly #labels: Record<string, string> | null;
  readonly #gauge: boolean;
  /** Counter: the increment not yet passed on. Gauge: the value. */
  #value = 0;
  #touched = false;

  constructor(prom: Counter<string> | Gauge<string>, labels: Record<string, string> | null, gauge: boolean) {
    this.#prom = prom;
    this.#labels = labels;
    this.#gauge = gauge;
  }

  inc(value?: number): void {
    if (value === undefined) this.#value++;
    else if (typeof value === 'number' && (this.#gauge || (value >= 0 && Number.isFinite(value)))) {
      this.#value += value;
    } else {
      this.#refuse('inc', value);
      return;
    }
    this.#touched = true;
  }

  dec(value?: number): void {
    if (value === undefined) this.#value--;
    else if (typeof value === 'number') this.#value -= value;
    else {
      this.#refuse('dec', value);
      return;
    }
    this.#touched = true;
  }

  set(value: number): void {
    if (typeof value !== 'number') {
      this.#refuse('set', value);
      return;
    }
    this.#value = value;
    this.#touched = true;
  }

  /** Passes the value on to prom-client. */
  flush(): void {
    if (!this.#touched) return;
    const prom = this.#prom;
    if (this.#gauge) {
      if (this.#labels === null) (prom as Gauge<string>).set(this.#value);
      else (prom as Gauge<string>).set(this.#labels, this.#value);
      return;
    }
    const delta = this.#value;
    this.#value = 0;
    this.#touched = false;
    if (this.#labels === null) (prom as Counter<string>).inc(delta);
    else (prom as Counter<string>).inc(this.#labels, delta);
  }

  /** Hands a value this class does not take to prom-client itself: it throws, or takes it as it always did. */
  #refuse(method: 'inc' | 'dec' | 'set', value: unknown): void {
    const prom = this.#prom as unknown as Record<string, (...a: unknown[]) => void>;
    const call = prom[method] as (...a: unknown[]) => void;
    if (this.#labels === null) call.call(prom, value);
    else call.call(prom, this.#labels, value);
  }
}

/** How metric names and the `optional` flag are applied (from `telemetry.metrics`). */
export interface MetricsNaming {
  /** Service name, or null for no prefix and no label (before telemetry is initialised). */
  service: string | null;
  format: 'metric_prefix' | 'label_with_name';
  reportOptional: boolean;
}

let naming: MetricsNaming = { service: null, format: 'metric_prefix', reportOptional: false };
const cells = new Map<string, Cell>();
const NAME = /^[a-z_][a-z0-9_]*$/;

/** One declared metric and its lazily created prom-client metric. */
class Cell {
  readonly key: string;
  readonly spec: AnySpec;
  prom: PromMetric | undefined = undefined;
  promName = '';
  labelNames: string[] | undefined = undefined;
  readonly children = new Map<string, Child>();
  /** The handles handed out, flushed before each read. */
  readonly buffered: (Buffered | BufferedHistogram)[] = [];
  /** The handle of a metric without labels. */
  unlabelled: Buffered | BufferedHistogram | null = null;

  constructor(key: string, spec: AnySpec) {
    this.key = key;
    this.spec = spec;
  }

  create(labelNames: string[]): PromMetric {
    const name =
      naming.format === 'metric_prefix' && naming.service !== null
        ? `${sanitize(naming.service)}_${this.key}`
        : this.key;
    const registers = this.spec.optional && !naming.reportOptional ? [] : [appRegistry];
    const buffered = this.buffered;
    const collect = (): void => {
      for (const b of buffered) b.flush();
    };
    const base = { name, help: this.spec.help, labelNames, registers };
    const prom =
      this.spec.kind === 'counter'
        ? new Counter({ ...base, collect })
        : this.spec.kind === 'gauge'
          ? new Gauge({ ...base, collect })
          : new Histogram(
              this.spec.buckets === undefined
                ? { ...base, collect }
                : { ...base, collect, buckets: [...this.spec.buckets] },
            );
    this.prom = prom;
    this.promName = name;
    this.labelNames = labelNames;
    return prom;
  }

  drop(): void {
    if (this.prom !== undefined) appRegistry.removeSingleMetric(this.promName);
    this.prom = undefined;
    this.children.clear();
    this.buffered.length = 0;
    this.unlabelled = null;
  }

  /** A buffered handle for `labels` (null: no labels), or null where prom-client's own is used. */
  #buffer(prom: PromMetric, labels: Record<string, string> | null): Buffered | BufferedHistogram | null {
    let b: Buffered | BufferedHistogram;
    if (this.spec.kind === 'histogram') {
      if (!histogramInternalsKnown) return null;
      b = new BufferedHistogram(prom as Histogram<string>, labels ?? {});
    } else b = new Buffered(prom as Counter<string> | Gauge<string>, labels, this.spec.kind === 'gauge');
    this.buffered.push(b);
    return b;
  }

  access(labels: Record<string, LabelValue> | undefined): Child {
    if (labels === undefined) {
      if (this.unlabelled !== null) return this.unlabelled;
      const prom = this.prom ?? this.create(this.labelNames ?? []);
      if ((this.labelNames as string[]).length > 0) return prom as Child; // prom-client throws on use
      this.unlabelled = this.#buffer(prom, null);
      return this.unlabelled ?? (prom as Child);
    }
    const prom = this.prom ?? this.create(this.labelNames ?? Object.keys(labels).sort());
    const names = this.labelNames as string[];
    let key: string;
    if (names.length === 1) key = String(labels[names[0] as string]);
    else {
      key = '';
      for (const n of names) key += `${String(labels[n])}\u0001`;
    }
    let child = this.children.get(key);
    if (child === undefined) {
      const values = names.map((n) => String(labels[n]));
      const promChild = prom.labels(...values) as Child;
      const own: Record<string, string> = {};
      for (const n of names) own[n] = String(labels[n]);
      child = this.#buffer(prom, own) ?? promChild;
      this.children.set(key, child);
    }
    return child;
  }
}

function sanitize(service: string): string {
  const s = service.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  return /^[0-9]/.test(s) ? `_${s}` : s;
}

function lint(key: string, kind: MetricKind): string | null {
  if (!NAME.test(key)) return 'must be snake_case: lower-case letters, digits and underscores';
  if (kind === 'counter' && !key.endsWith('_total')) return 'is a counter, so its name must end in "_total"';
  if (kind !== 'counter' && key.endsWith('_total'))
    return 'is not a counter, so its name must not end in "_total"';
  if (kind !== 'histogram' && /_(bucket|count|sum)$/.test(key))
    return 'must not end in _bucket, _count or _sum';
  return null;
}

/**
 * Declares a group of metrics and returns their typed accessors. Throws `FND_ERR_TELEMETRY`
 * at declaration for a name that `promtool` would reject or that is already declared.
 */
export function defineMetrics<T extends Record<string, AnySpec>>(group: string, specs: T): MetricGroup<T> {
  if (!NAME.test(group)) {
    throw new FoundationsError(FND_ERR.TELEMETRY, `metric group "${group}" must be snake_case`);
  }
  const out: Record<string, (labels?: Record<string, LabelValue>) => Child> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const key = `${group}_${name}`;
    const problem = lint(key, spec.kind);
    if (problem !== null) throw new FoundationsError(FND_ERR.TELEMETRY, `metric "${key}" ${problem}`);
    if (cells.has(key)) throw new FoundationsError(FND_ERR.TELEMETRY, `metric "${key}" is declared twice`);
    const cell = new Cell(key, spec);
    cells.set(key, cell);
    out[name] = (labels) => cell.access(labels);
  }
  return out as unknown as MetricGroup<T>;
}

/**
 * Applies `telemetry.metrics` and the service name. Metrics already created are re-created
 * under their new names (values restart from zero: call this at start-up).
 */
export function configureMetrics(next: MetricsNaming): void {
  naming = { ...next };
  setServiceLabel(next.format === 'label_with_name' ? next.service : null);
  for (const cell of cells.values()) cell.drop();
}

/** @internal The prom-client metric behind `group_name`, if it has been used. */
export function promMetric(key: string): PromMetric | undefined {
  return cells.get(key)?.prom;
}
