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
 * labels is a property read. Counter and gauge handles keep their value in a number and hand it
 * to prom-client when the metric is read (its `collect`): prom-client's own `inc` hashes and
 * validates the labels on every call. A metric appears in `/metrics` from its first use; call
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
    } else return this.#refuse('inc', value);
    this.#touched = true;
  }

  dec(value?: number): void {
    if (value === undefined) this.#value--;
    else if (typeof value === 'number') this.#value -= value;
    else return this.#refuse('dec', value);
    this.#touched = true;
  }

  set(value: number): void {
    if (typeof value !== 'number') return this.#refuse('set', value);
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
  /** The counter and gauge handles handed out, flushed before each read. */
  readonly buffered: Buffered[] = [];
  /** The handle of a counter or gauge without labels. */
  unlabelled: Buffered | null = null;

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
              this.spec.buckets === undefined ? base : { ...base, buckets: [...this.spec.buckets] },
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

  /** A buffered handle for `labels` (null: no labels), or null for a histogram. */
  #buffer(prom: PromMetric, labels: Record<string, string> | null): Buffered | null {
    if (this.spec.kind === 'histogram') return null;
    const b = new Buffered(prom as Counter<string> | Gauge<string>, labels, this.spec.kind === 'gauge');
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
