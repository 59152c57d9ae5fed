/**
 * Errno names for errors that reach JS as numbers (read errors on the event loop), through
 * `os.constants.errno`, so no table is kept here.
 */
import { constants } from 'node:os';

const names = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!names.has(n)) names.set(n, name);

/** `EPERM` for 1, and so on; `ERRNO_<n>` for a number the table lacks. */
export function errnoName(n: number): string {
  return names.get(n) ?? `ERRNO_${n}`;
}
