/**
 * Checks of settings beyond their schema: what start-up would otherwise find only when it opens
 * a file, binds a socket or creates a directory. The CLI runs them after parsing, for `--check`
 * and before `main` alike (`checkSettings`), so a configuration that `--check` accepts starts,
 * and a start-up that would fail on a path fails at once, as one line naming the key and the
 * file that set it.
 *
 * Foundations checks its own sections here (`restart`, `telemetry.logging`); a service adds
 * its own through `ServiceSpec.check`, with the path helpers below.
 *
 * Ordering rule: checks only read (stat, access); nothing is created, opened for writing or
 * bound, so `--check` leaves no trace.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { SettingsError, type SettingsIssue, type SettingsSource, settingOrigin } from './load.ts';

/** One problem: the dotted key and what is wrong with its value. */
export interface SettingsProblem {
  /** Dotted key path, e.g. `endpoints.main.tls.cert`. */
  readonly path: string;
  readonly message: string;
}

/** File systems that look like files but are not places to write logs or records to. */
const VIRTUAL_ROOTS = ['/proc', '/sys'];

function errnoText(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** The closest existing directory at or above `dir`. */
function existingAncestor(dir: string): string {
  let d = path.resolve(dir);
  while (!fs.existsSync(d)) {
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  return d;
}

/** `dir`'s real path, or `dir` itself when it cannot be resolved (the caller reports why). */
function realDir(dir: string): string {
  try {
    return fs.realpathSync(dir);
  } catch {
    // Boundary: an unresolvable directory is reported by the access checks that follow.
    return dir;
  }
}

/**
 * Why `file` cannot be appended to, or `null` when it can. `createDir`: the program creates
 * missing directories itself (then the closest existing one must be writable); otherwise the
 * directory must exist.
 */
export function unwritableFile(file: string, createDir: boolean): string | null {
  if (file === '') return 'a file path is required';
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const existing = existingAncestor(dir);
  const real = realDir(existing);
  const root = VIRTUAL_ROOTS.find((r) => real === r || real.startsWith(`${r}/`));
  if (root !== undefined) return `${file} is under ${root}, a virtual file system, not a place to write to`;
  if (existing !== dir && !createDir) return `directory ${dir} does not exist`;
  const st = fs.statSync(abs, { throwIfNoEntry: false });
  if (st !== undefined) {
    if (st.isDirectory()) return `${file} is a directory`;
    try {
      fs.accessSync(abs, fs.constants.W_OK);
    } catch (e) {
      return `${file} is not writable (${errnoText(e)})`;
    }
    return null;
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    return `cannot create ${file}: directory ${existing} is not writable (${errnoText(e)})`;
  }
  return null;
}

/** Why `file` cannot be read, or `null` when it can (`what`: e.g. "a PEM certificate"). */
export function unreadableFile(file: string, what = 'a file'): string | null {
  if (file === '') return `${what} is required`;
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch (e) {
    return `cannot read ${file} (${errnoText(e)})`;
  }
  return fs.statSync(file).isDirectory() ? `${file} is a directory, not ${what}` : null;
}

function section(settings: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const v = settings[key];
  return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
}

/** Foundations' own checks of the sections it defines, when the schema has them. */
export function foundationsChecks(settings: Record<string, unknown>): SettingsProblem[] {
  const problems: SettingsProblem[] = [];
  const restart = section(settings, 'restart');
  // An empty socket is the per-instance default, resolved later (restart/socket-path.ts).
  if (restart?.enabled === true && typeof restart.socket === 'string' && restart.socket !== '') {
    const socket = restart.socket;
    if (!path.isAbsolute(socket)) {
      problems.push({
        path: 'restart.socket',
        message: `must be an absolute path (the restarter may run from another directory), got "${socket}"`,
      });
    } else if (!fs.existsSync(path.dirname(socket))) {
      problems.push({ path: 'restart.socket', message: `directory ${path.dirname(socket)} does not exist` });
    }
  }
  const logging = section(section(settings, 'telemetry') ?? {}, 'logging');
  if (logging?.output === 'file' && typeof logging.file === 'string') {
    const why = unwritableFile(logging.file, true);
    if (why !== null) problems.push({ path: 'telemetry.logging.file', message: why });
  }
  return problems;
}

/**
 * Runs Foundations' checks and `extra` on parsed `settings`, and throws one `SettingsError`
 * listing every problem, each with the file that set its key (from `sources`, merged over the
 * defaults of `schema`; `(defaults)` when no file set it).
 */
export function checkSettings(
  schema: z.ZodType,
  sources: readonly SettingsSource[],
  settings: unknown,
  extra?: (settings: never) => readonly SettingsProblem[],
): void {
  const value = settings as Record<string, unknown>;
  const problems = [...foundationsChecks(value), ...(extra?.(settings as never) ?? [])];
  if (problems.length === 0) return;
  throw new SettingsError(withOrigins(schema, sources, problems));
}

/** `problems` as issues naming the file that set each key (`(defaults)` when none did). */
export function withOrigins(
  schema: z.ZodType,
  sources: readonly SettingsSource[],
  problems: readonly SettingsProblem[],
): SettingsIssue[] {
  return problems.map((p) => ({
    path: p.path,
    message: p.message,
    file: settingOrigin(schema, sources, p.path) ?? '(defaults)',
  }));
}
