/**
 * Loading settings: YAML files (or in-memory objects) merged in order, then parsed by the
 * schema, with errors that name the key path and the file that set it.
 *
 * Merge rules, applied file by file in order (later wins):
 * - sections (`s.object`, `s.enabled`) merge key by key; an empty section (`key:` with nothing
 *   under it, i.e. null) changes nothing;
 * - maps (`s.map`) merge entry by entry, and an entry set to `~` deletes it. A map that no file
 *   sets keeps its default entries; once a file sets it, it holds only the entries files name
 *   (so a config can drop the example entries), and an entry named like a default entry starts
 *   from that entry (so `endpoints: {main: {addr: …}}` changes only the address of `main`);
 * - scalars and lists replace.
 * Keys missing everywhere take their defaults when the schema parses the merged value.
 */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import type { z } from 'zod';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { requireNode, type SettingsNode, settingsNode, variantSchema } from './schema.ts';

/** One problem found in the settings: where, what, and the file that set that key if known. */
export interface SettingsIssue {
  /** Dotted key path (`endpoints.main.addr`); `""` for the whole document. */
  readonly path: string;
  /** What is wrong, e.g. `expected "host:port", got 123`. */
  readonly message: string;
  /** The file (or source name) the bad value came from, when it can be told. */
  readonly file: string | undefined;
}

/** Formats one issue as `<path>: <message> (in <file>)`. */
export function formatIssue(issue: SettingsIssue): string {
  const where = issue.path === '' ? '' : `${issue.path}: `;
  const file = issue.file === undefined ? '' : ` (in ${issue.file})`;
  return `${where}${issue.message}${file}`;
}

/**
 * Invalid settings (`FND_ERR_SETTINGS`, a user error). The message is one line naming the first
 * problem's key path and file; `issues` lists every problem found.
 */
export class SettingsError extends FoundationsError {
  /** Dotted key path of the first problem (`""` for the whole file). */
  readonly path: string;
  /** File of the first problem, when known. */
  readonly file: string | undefined;
  /** Every problem found, in document order. */
  readonly issues: readonly SettingsIssue[];

  constructor(issues: readonly SettingsIssue[], options?: { cause?: unknown }) {
    const first = issues[0] ?? { path: '', message: 'invalid settings', file: undefined };
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    super(FND_ERR.SETTINGS, formatIssue(first) + more, { userError: true, cause: options?.cause });
    this.name = 'SettingsError';
    this.path = first.path;
    this.file = first.file;
    this.issues = issues;
  }
}

/** One layer of settings: a parsed document and the name used for it in errors. */
export interface SettingsSource {
  readonly source: string;
  readonly value: unknown;
}

type Key = string | number;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sets an own property, even one named `__proto__`. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Formats a key path: `a.b`, with `["Example endpoint"]` for keys that are not plain words. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z0-9_-]+$/.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

function merge(
  node: SettingsNode | undefined,
  base: unknown,
  over: unknown,
  path: Key[],
  source: string,
  origins: Map<string, string>,
): unknown {
  if (over === undefined) return base;
  // A section of several kinds merges as the kind the result will have (the later file's key wins).
  if (node?.kind === 'variants') {
    const key = node.key;
    const tag = isRecord(over) && over[key] !== undefined ? over : isRecord(base) ? base : over;
    const section = variantSchema(node, tag);
    node = section === undefined ? undefined : settingsNode(section);
  }
  if (node?.kind === 'object' || node?.kind === 'map') {
    if (over === null) return base; // an empty section leaves everything as it was
    if (isRecord(over)) {
      const out: Record<string, unknown> = {};
      if (isRecord(base)) for (const [k, v] of Object.entries(base)) setOwn(out, k, v);
      for (const [k, v] of Object.entries(over)) {
        if (node.kind === 'map' && v === null) {
          delete out[k];
          continue;
        }
        const child = node.kind === 'map' ? node.value : node.shape[k];
        const childNode = child === undefined ? undefined : settingsNode(child);
        // The first file to set a map: an entry named like a default entry starts from it.
        const start =
          node.kind === 'map' && base === undefined && Object.hasOwn(node.default, k)
            ? node.default[k]
            : out[k];
        setOwn(out, k, merge(childNode, start, v, [...path, k], source, origins));
      }
      origins.set(formatPath(path), source);
      return out;
    }
  }
  origins.set(formatPath(path), source);
  return over;
}

/** The file that set `path` or the closest section above it. */
function originOf(path: readonly Key[], origins: Map<string, string>): string | undefined {
  for (let n = path.length; n >= 0; n--) {
    const found = origins.get(formatPath(path.slice(0, n)));
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The schema node at `path`, following sections and maps, for "did you mean" hints. */
function nodeAt(root: SettingsNode, path: readonly PropertyKey[]): SettingsNode | undefined {
  let node: SettingsNode | undefined = root;
  for (const key of path) {
    if (node?.kind === 'variants') node = allVariantFields(node);
    if (node?.kind === 'object') {
      const field: z.ZodType | undefined = node.shape[String(key)];
      node = field === undefined ? undefined : settingsNode(field);
    } else if (node?.kind === 'map') node = settingsNode(node.value);
    else return undefined;
  }
  return node;
}

/** Every variant's fields as one section, for hints where the input is not at hand. */
function allVariantFields(node: SettingsNode & { kind: 'variants' }): SettingsNode {
  const shape: Record<string, z.ZodType> = {};
  for (const section of Object.values(node.variants)) {
    const n = settingsNode(section);
    if (n?.kind === 'object') Object.assign(shape, n.shape);
  }
  return { kind: 'object', description: node.description, shape };
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

function unknownKeyMessage(section: SettingsNode | undefined, key: string): string {
  if (section?.kind !== 'object') return 'unknown key';
  const best = Object.keys(section.shape)
    .map((k) => ({ k, d: editDistance(k, key) }))
    // 0: the key exists in another variant's section of the same name (hints see every
    // variant's fields); suggesting the key itself would only confuse.
    .filter(({ d }) => d > 0 && d <= 2)
    .sort((a, b) => a.d - b.d)[0];
  return best === undefined ? 'unknown key' : `unknown key (did you mean "${best.k}"?)`;
}

/**
 * Merges `objects` in order and parses the result with `schema` (built with `s.object`).
 * `source` names each object in errors (a file name, or e.g. `"overrides"`). Throws
 * `SettingsError` listing every problem. Synchronous.
 */
export function parseSettings<S extends z.ZodType>(
  schema: S,
  objects: readonly SettingsSource[],
): z.output<S> {
  const root = requireNode(schema, 'the root schema');
  const origins = new Map<string, string>();
  let merged: unknown;
  for (const { source, value } of objects) merged = merge(root, merged, value, [], source, origins);
  const result = schema.safeParse(merged, { reportInput: true });
  if (result.success) return result.data;
  const sources = objects.map((o) => o.source);
  const fallback = sources.length === 0 ? undefined : sources.join(' or ');
  const issues: SettingsIssue[] = [];
  for (const iss of result.error.issues) {
    const path = iss.path as Key[];
    if (iss.code === 'unrecognized_keys') {
      const section = nodeAt(root, path);
      for (const key of iss.keys) {
        const keyPath = [...path, key];
        issues.push({
          path: formatPath(keyPath),
          message: unknownKeyMessage(section, key),
          file: originOf(keyPath, origins) ?? fallback,
        });
      }
    } else {
      issues.push({
        path: formatPath(path),
        message: iss.message,
        file: originOf(path, origins) ?? fallback,
      });
    }
  }
  throw new SettingsError(issues);
}

/** Reads and parses one YAML file; syntax errors name the file, line and column. */
export function readYamlFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? e);
    throw new SettingsError([{ path: '', message: `cannot read config file: ${why}`, file }], { cause: e });
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, merge: true });
  const err = doc.errors[0];
  if (err !== undefined) {
    const pos = err.linePos?.[0];
    const at = pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`;
    const what = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new SettingsError([{ path: '', message: `YAML syntax error${at}: ${what}`, file }], { cause: err });
  }
  const value = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  if (value !== null && !isRecord(value)) {
    const got = Array.isArray(value) ? 'a list' : JSON.stringify(value);
    throw new SettingsError([{ path: '', message: `expected a mapping of settings, got ${got}`, file }]);
  }
  return value;
}

/**
 * Loads settings from YAML `files`, merged in order over the defaults (see the merge rules at
 * the top of this module). Synchronous: it runs once at start-up. Throws `SettingsError`.
 */
export function loadSettings<S extends z.ZodType>(schema: S, files: readonly string[]): z.output<S> {
  return parseSettings(
    schema,
    files.map((file) => ({ source: file, value: readYamlFile(file) })),
  );
}

/** The settings a program gets when no file is given. */
export function defaultSettings<S extends z.ZodType>(schema: S): z.output<S> {
  return parseSettings(schema, []);
}

/**
 * The source (file) that set the key at dotted `path` (`endpoints.main.tls.cert`,
 * `egress.dns.nameservers[1]`) or the closest section above it, when `sources` are merged over
 * the defaults of `schema`; `undefined` when the key keeps its default.
 */
export function settingOrigin(
  schema: z.ZodType,
  sources: readonly SettingsSource[],
  path: string,
): string | undefined {
  const root = requireNode(schema, 'the root schema');
  const origins = new Map<string, string>();
  let merged: unknown;
  for (const { source, value } of sources) merged = merge(root, merged, value, [], source, origins);
  for (let p = path; ; ) {
    const found = origins.get(p);
    if (found !== undefined) return found;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) return undefined;
    p = p.slice(0, cut);
  }
}

/** Merges sources like `parseSettings` does, without parsing: the input-form document. */
export function mergeSources(schema: z.ZodType, objects: readonly SettingsSource[]): unknown {
  const root = requireNode(schema, 'the root schema');
  let merged: unknown;
  for (const { source, value } of objects) merged = merge(root, merged, value, [], source, new Map());
  return merged;
}
