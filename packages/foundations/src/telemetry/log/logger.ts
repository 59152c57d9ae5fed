/**
 * The log sink: one pino logger per process, configured from `telemetry.logging`, and the
 * per-context `LogScope` that carries structured fields.
 *
 * Ordering rules for the hot path (pino's habit: pay nothing for what nobody uses):
 * 1. the level check comes first and is one integer compare, so a record below the
 *    verbosity costs a function call and nothing else;
 * 2. then the rate limit (one `Date.now()` and two integer updates);
 * 3. only then are fields redacted and serialized. A scope's own fields are serialized once
 *    into a pino child logger, rebuilt only after `addFields` or a reconfiguration.
 * Each key appears once in a line, the most specific value winning: a record's own field over
 * its scope's (a fork's over its parent's, merged before serializing), and those over the
 * process's `service` and `pid`. pino does not do this itself: it writes a child's bindings
 * and then the call's fields, both, so a record that sets a scope's key takes the slow path.
 */
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { FND_ERR, FoundationsError } from '../../errors.ts';
import { unwritableFile } from '../../settings/checks.ts';
import type { LoggingSettings, Verbosity } from '../settings-types.ts';
import { formatTextLine } from './text-format.ts';

/** Numeric levels, as pino counts them. */
export const LEVELS = { TRACE: 10, DEBUG: 20, INFO: 30, WARN: 40, ERROR: 50 } as const satisfies Record<
  Verbosity,
  number
>;
/** Method name on a pino logger for each numeric level. */
type PinoMethod = 'trace' | 'debug' | 'info' | 'warn' | 'error';
const METHOD: Record<number, PinoMethod> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error' };
/** Value written in place of a redacted field. */
export const REDACTED = '[REDACTED]';

/** A log record as the test capture sees it: fields already merged and redacted. */
export interface LogRecord {
  level: Verbosity;
  msg: string;
  fields: Record<string, unknown>;
  /** The trace the record was written in, when that trace is sampled (`trace_id` in output). */
  traceId?: string;
}

interface Sink {
  /** The pino logger, with no fields of its own: `base` goes into each record's fields. */
  root: pino.Logger;
  /** The process's fields (`service`, `pid`), first in every record. */
  base: Readonly<Record<string, unknown>>;
  minLevel: number;
  redact: ReadonlySet<string>;
  rateLimit: number; // records per second; Infinity when disabled
  generation: number;
  ownsFd: boolean;
  destination: pino.DestinationStream & { flushSync?: () => void };
}

let sink: Sink = makeSink(
  {
    output: 'terminal',
    file: '',
    format: 'text',
    verbosity: 'INFO',
    redact_keys: [],
    rate_limit: { enabled: true, max_events_per_second: 10_000 },
  },
  undefined,
  0,
);
let capture: ((record: LogRecord) => void) | null = null;
/** The level check of the hot path: the sink's verbosity, or the capture's while capturing. */
let minLevel: number = sink.minLevel;

function makeSink(cfg: LoggingSettings, service: string | undefined, generation: number): Sink {
  // Writes are synchronous: no record is lost at exit or crash, and measured on this kind of
  // machine a synchronous write was faster per record than sonic-boom's asynchronous mode
  // (about 1.5 us against 3 us to a file). The file is opened here so that a bad path is a
  // start-up error that names the setting.
  const destination = pino.destination({
    dest: cfg.output === 'file' ? openLogFile(cfg.file) : cfg.output === 'stderr' ? 2 : 1,
    sync: true,
  });
  // pino writes a child's bindings and then a call's fields as they come, so a key in both
  // would be written twice: `base` is kept here and merged with a scope's fields instead.
  const root = pino(
    {
      level: 'trace',
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label.toUpperCase() }) },
      ...(cfg.format === 'text' ? { hooks: { streamWrite: formatTextLine } } : {}),
    },
    destination,
  );
  return {
    root,
    base: service === undefined ? { pid: process.pid } : { service, pid: process.pid },
    ownsFd: cfg.output === 'file',
    minLevel: LEVELS[cfg.verbosity],
    redact: new Set(cfg.redact_keys),
    rateLimit: cfg.rate_limit.enabled ? cfg.rate_limit.max_events_per_second : Number.POSITIVE_INFINITY,
    generation,
    destination,
  };
}

function openLogFile(file: string): number {
  if (file === '') {
    throw new FoundationsError(
      FND_ERR.SETTINGS,
      'telemetry.logging.file: expected a file path when output is file',
      {
        userError: true,
      },
    );
  }
  // A file under /proc opens but every write fails, and the writer would retry forever.
  const why = unwritableFile(file, true);
  if (why !== null) {
    throw new FoundationsError(FND_ERR.SETTINGS, `telemetry.logging.file: ${why}`, { userError: true });
  }
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    return fs.openSync(file, 'a');
  } catch (e) {
    throw new FoundationsError(
      FND_ERR.SETTINGS,
      `telemetry.logging.file: cannot open ${file}: ${(e as Error).message}`,
      {
        cause: e,
        userError: true,
      },
    );
  }
}

/** Replaces the process's log sink. Existing scopes rebuild their child loggers lazily. */
export function configureLogging(cfg: LoggingSettings, service?: string): void {
  const old = sink;
  sink = makeSink(cfg, service, old.generation + 1);
  if (capture === null) minLevel = sink.minLevel;
  old.destination.flushSync?.();
  if (old.ownsFd) (old.destination as unknown as { end(): void }).end();
}

/** Writes any buffered records now (writes are synchronous, so this is a safety net). Safe at exit. */
export function flushLogs(): void {
  try {
    sink.destination.flushSync?.();
  } catch {
    // Boundary: flushing at exit must never throw over the crash being reported.
  }
}

/** A capture of log records (tests): where records go and from which level. */
export interface LogCapture {
  readonly fn: (record: LogRecord) => void;
  readonly level: Verbosity;
}

let captureLevel: Verbosity = 'TRACE';

/**
 * Routes records to a capture instead of the output (tests); `null` restores the output and
 * its verbosity. Returns the capture it replaced, so nested captures can restore it.
 */
export function setLogCapture(next: LogCapture | null): LogCapture | null {
  const previous = capture === null ? null : { fn: capture, level: captureLevel };
  capture = next?.fn ?? null;
  captureLevel = next?.level ?? 'TRACE';
  minLevel = next === null ? sink.minLevel : LEVELS[next.level];
  return previous;
}

/** True when a record at `level` would be written (cheap: for guarding costly field building). */
export function levelEnabled(level: Verbosity): boolean {
  return LEVELS[level] >= minLevel;
}

/** The hot-path form of `levelEnabled`, on a numeric level. */
export function levelPasses(level: number): boolean {
  return level >= minLevel;
}

function redactInto(out: Record<string, unknown>, fields: Record<string, unknown>): void {
  const redact = sink.redact;
  for (const key in fields) out[key] = redact.has(key) ? REDACTED : fields[key];
}

/**
 * Fields computed only when first needed: a connection's scope names its id and client address,
 * but formatting them costs time on every connection while most connections write no record.
 * `logFields` must return the same fields whenever it is called (it may be called late, or more
 * than once).
 */
export interface LogFieldSource {
  logFields(): Record<string, unknown>;
}

/** One layer of a scope's fields: a copied plain object, or a source asked when needed. */
type Layer = Readonly<Record<string, unknown>> | LogFieldSource;
const NO_LAYERS: readonly Layer[] = [];
/** Layers kept before `add` merges them into one object. */
const MAX_LAYERS = 8;

function mergeLayer(into: Record<string, unknown>, layer: Layer): void {
  const source = layer as Partial<LogFieldSource>;
  Object.assign(into, typeof source.logFields === 'function' ? source.logFields() : layer);
}

/**
 * Structured fields of one telemetry context. A fork copies the fields, so what is added
 * to the fork never reaches the parent or its siblings.
 *
 * Cost: fields are kept as immutable layers (added objects, copied when added, and field
 * sources), merged the first time a record or a reader needs them. A fork shares its parent's
 * layers, so forking and adding cost no copy of the fields until something is written.
 */
export class LogScope {
  /** The first layers (shared with forks, never changed: a change makes a new array). */
  #layers: readonly Layer[] = NO_LAYERS;
  /** The last one or two layers, kept out of an array: a fork adds one, and most scopes stop there. */
  #a: Layer | null = null;
  #b: Layer | null = null;
  /** The merged fields, or null until first needed (and after `add`). */
  #fields: Record<string, unknown> | null = null;
  /** The pino child logger with these fields, built by the first record written. */
  #out: { logger: pino.Logger; generation: number } | null = null;

  constructor(fields?: Record<string, unknown>) {
    if (fields !== undefined) {
      this.#a = fields;
      this.#fields = fields;
    }
  }

  /** The scope's fields (read-only view; use `add` to change them). */
  get fields(): Readonly<Record<string, unknown>> {
    let merged = this.#fields;
    if (merged === null) {
      merged = {};
      for (const layer of this.#layers) mergeLayer(merged, layer);
      if (this.#a !== null) mergeLayer(merged, this.#a);
      if (this.#b !== null) mergeLayer(merged, this.#b);
      this.#fields = merged;
    }
    return merged;
  }

  /** A new scope starting with a copy of these fields, plus those of `source` if given. */
  fork(source?: LogFieldSource): LogScope {
    const child = new LogScope();
    child.#layers = this.#layers;
    child.#a = this.#a;
    child.#b = this.#b;
    if (source !== undefined) child.#push(source);
    return child;
  }

  /** Adds or overwrites fields in this scope. */
  add(fields: Record<string, unknown>): void {
    if (this.#layers.length + 2 >= MAX_LAYERS) {
      const merged = { ...this.fields, ...fields };
      this.#layers = NO_LAYERS;
      this.#a = merged;
      this.#b = null;
    } else this.#push({ ...fields });
    this.#fields = null;
    this.#out = null;
  }

  /** Adds the fields of `source`, asked for them when a record or a reader first needs them. */
  addSource(source: LogFieldSource): void {
    this.#push(source);
    this.#fields = null;
    this.#out = null;
  }

  #push(layer: Layer): void {
    if (this.#a === null) this.#a = layer;
    else if (this.#b === null) this.#b = layer;
    else {
      // A new array of exactly this length: a spread reserves room to grow, kept as long as the scope.
      this.#layers = this.#layers.concat([this.#a, this.#b]);
      this.#a = layer;
      this.#b = null;
    }
  }

  #logger(): pino.Logger {
    let out = this.#out;
    if (out === null || out.generation !== sink.generation) {
      const bindings: Record<string, unknown> = { ...sink.base };
      redactInto(bindings, this.fields);
      out = { logger: sink.root.child(bindings), generation: sink.generation };
      this.#out = out;
    }
    return out.logger;
  }

  /**
   * Writes one record at `level` with this scope's fields plus `fields`, and `trace_id` when
   * given (the record then points at its trace). `always` skips the verbosity and the rate
   * limit (for the one record a crash writes).
   */
  write(
    level: number,
    msg: string,
    fields: Record<string, unknown> | undefined,
    traceId?: string,
    always = false,
  ): void {
    if (!always && (level < minLevel || !rateAllows())) return;
    if (capture !== null) {
      const merged: Record<string, unknown> = {};
      redactInto(merged, this.fields);
      if (fields !== undefined) redactInto(merged, fields);
      const record: LogRecord = { level: verbosityOf(level), msg, fields: merged };
      if (traceId !== undefined) record.traceId = traceId;
      capture(record);
      return;
    }
    const logger = this.#logger();
    const method = METHOD[level] ?? 'info';
    if (fields === undefined && traceId === undefined) {
      logger[method](msg);
    } else {
      const own: Record<string, unknown> = {};
      if (fields !== undefined) redactInto(own, fields);
      if (traceId !== undefined) own.trace_id = traceId;
      if (this.#overrides(own)) {
        // The record's own value wins: the scope's fields, without the logger's pre-serialized
        // copy of them, go in one object with the record's (rare: one line per request end).
        const merged: Record<string, unknown> = { ...sink.base };
        redactInto(merged, this.fields);
        for (const key in own) if (own[key] !== undefined) merged[key] = own[key];
        sink.root[method](merged, msg);
      } else logger[method](own, msg);
    }
  }

  /** Whether `own` sets a key the scope (or the process) already has (undefined sets nothing). */
  #overrides(own: Record<string, unknown>): boolean {
    const scope = this.fields;
    const base = sink.base;
    for (const key in own) {
      if (own[key] !== undefined && (Object.hasOwn(scope, key) || Object.hasOwn(base, key))) return true;
    }
    return false;
  }
}

function verbosityOf(level: number): Verbosity {
  return level >= 50
    ? 'ERROR'
    : level >= 40
      ? 'WARN'
      : level >= 30
        ? 'INFO'
        : level >= 20
          ? 'DEBUG'
          : 'TRACE';
}

// Rate limit: a fixed one-second window. When records were dropped, the first record of
// the next window is preceded by one warning that says how many.
let windowStart = 0;
let windowCount = 0;
let dropped = 0;

function rateAllows(): boolean {
  const limit = sink.rateLimit;
  if (limit === Number.POSITIVE_INFINITY) return true;
  const now = Date.now();
  if (now - windowStart >= 1000) {
    windowStart = now;
    windowCount = 0;
    if (dropped > 0) {
      const n = dropped;
      dropped = 0;
      windowCount = 1;
      const notice = `rate limit dropped ${n} log records`;
      if (capture !== null) capture({ level: 'WARN', msg: notice, fields: { dropped: n } });
      else sink.root.warn({ ...sink.base, dropped: n }, notice);
    }
  }
  if (windowCount < limit) {
    windowCount++;
    return true;
  }
  dropped++;
  return false;
}

/** Records dropped by the rate limit and not yet reported (for tests and metrics). */
export function droppedLogRecords(): number {
  return dropped;
}

/** Resets the rate-limit window (tests). */
export function resetLogRateLimit(): void {
  windowStart = 0;
  windowCount = 0;
  dropped = 0;
}
