/**
 * Durations and sizes as people write them in config files (`10s`, `250ms`, `16KiB`).
 *
 * Settings keep these in their written form in YAML and in schema defaults; the values a
 * program sees are plain numbers (milliseconds, bytes). The parsers return `undefined` for
 * anything they do not accept, so callers word the error for their own context.
 */

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * The longest duration a settings value may hold: 2^31-1 ms (24d20h31m23s647ms), the longest
 * delay Node.js timers take. A longer one is not an error to Node: it warns
 * (`TimeoutOverflowWarning`) and fires after 1 ms, so a timeout would expire at once and a sweep
 * would spin. Code that derives a timer from a duration (a sum, a multiple) caps it here too.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/**
 * Parses a duration such as `10s`, `250ms`, `1.5m`, `1h30m` or `2d` into milliseconds.
 * Units: `ms`, `s`, `m`, `h`, `d`; parts may be combined, largest first. A bare number is
 * refused (is `10` seconds or milliseconds?). Returns `undefined` if the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  let total = 0;
  let lastUnit = Number.POSITIVE_INFINITY;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < trimmed.length) {
    const m = DURATION_PART.exec(trimmed);
    if (m === null) return undefined;
    const unit = DURATION_UNITS[m[2]!]!;
    if (unit >= lastUnit) return undefined; // `1s1s` or `1s1h`: ambiguous, refuse
    lastUnit = unit;
    total += Number(m[1]) * unit;
  }
  return total;
}

/**
 * Formats milliseconds as the shortest exact duration string: `10s`, `250ms`, `1m30s`, `0s`.
 * `parseDuration(formatDuration(ms)) === ms` for any whole number of milliseconds.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`cannot format duration ${ms}`);
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  if (rest > 0) out += `${rest}ms`;
  return out;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KB: 1000,
  kB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  TB: 1000 ** 4,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
};

/**
 * Parses a size such as `16KiB`, `1.5MiB`, `10MB`, `512B` or `1024` into a whole number of
 * bytes. Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, decimal ones (`kB`/`KB`,
 * `MB`, `GB`, `TB`) powers of 1000. A number (or numeric string) is bytes. Returns `undefined`
 * for anything else, and for sizes that are negative or not a whole number of bytes.
 */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0 ? input : undefined;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(input);
  if (m === null) return undefined;
  const unit = m[2] === '' ? 1 : SIZE_UNITS[m[2]!];
  if (unit === undefined) return undefined;
  const bytes = Number(m[1]) * unit;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats bytes with the largest binary unit that divides it exactly: `16KiB`, `1MiB`, `1000B`. */
export function formatSize(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`cannot format size ${bytes}`);
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB'] as const) {
    const size = SIZE_UNITS[unit]!;
    if (bytes > 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
