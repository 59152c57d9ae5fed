/**
 * The `text` log format: one human-readable line per record,
 * `2026-01-02T03:04:05.678Z INFO message key=value key2="two words"`.
 * pino serializes JSON; this turns its line into text in-process (pino's `streamWrite` hook),
 * so both formats share one code path and one set of fields. Text is meant for terminals,
 * where this extra parse is not the bottleneck; use `json` for volume.
 */

const HIDDEN = new Set(['time', 'level', 'msg', 'pid', 'service']);
const BARE = /^[\w.:/@+-]+$/;

function formatValue(value: unknown): string {
  if (typeof value === 'string') return BARE.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value);
}

/** Turns one pino JSON line into a text line. A line that is not JSON passes unchanged. */
export function formatTextLine(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    // Boundary: never lose a record because it could not be reformatted.
    return line;
  }
  let out = `${String(record.time ?? '')} ${String(record.level ?? '').padEnd(5)} ${String(record.msg ?? '')}`;
  let stack = '';
  for (const key in record) {
    if (HIDDEN.has(key)) continue;
    const value = record[key];
    const err = value as { message?: unknown; stack?: unknown } | null;
    if (typeof err === 'object' && err !== null && typeof err.stack === 'string') {
      // An error reads as its message; its stack follows the line, indented.
      out += ` ${key}=${formatValue(String(err.message ?? ''))}`;
      stack += `\n    ${err.stack.replaceAll('\n', '\n    ')}`;
    } else {
      out += ` ${key}=${formatValue(value)}`;
    }
  }
  return `${out}${stack}\n`;
}
