/**
 * The settings helpers (`s.*`): the only way to build a settings schema.
 *
 * Each helper returns a plain zod 4 schema whose default is kept in its *input* form with
 * `.prefault()` (so `"10s"`, not `10000`), and records what it is in a registry: its kind, its
 * description and its default. Generation (YAML, JSON Schema) and the schema-aware merge of
 * files read that registry. Rules enforced when a schema is defined, so a mistake fails at
 * start-up of the program that defines it, never in a user's config:
 * - every field has a non-empty description and a default that parses;
 * - sections are `s.object`/`s.enabled` and always present (no optional object hiding its knobs);
 * - a section only holds fields built by these helpers (a raw zod schema is refused).
 * Do not chain zod methods on a helper's result: that makes a new, unregistered schema.
 */
import { z } from 'zod';
import { type ListenAddr, parseCidr, parseListenAddr, parseTargetAddr, type SocketAddr } from './net.ts';
import { formatDuration, formatSize, MAX_TIMER_MS, parseDuration, parseSize } from './units.ts';

/** What the registry knows about one settings schema. Defaults are in input (YAML) form. */
export type SettingsNode =
  | { readonly kind: 'leaf'; readonly description: string; readonly default: unknown }
  | { readonly kind: 'optional'; readonly description: string; readonly inner: z.ZodType }
  | {
      readonly kind: 'list';
      readonly description: string;
      readonly item: z.ZodType | undefined;
      readonly default: readonly unknown[];
    }
  | {
      readonly kind: 'object';
      readonly description: string;
      readonly shape: Readonly<Record<string, z.ZodType>>;
    }
  | {
      readonly kind: 'variants';
      readonly description: string;
      /** The field whose value picks the variant (e.g. `protocol`). */
      readonly key: string;
      /** Each variant's section (an object node, the key's literal first). */
      readonly variants: Readonly<Record<string, z.ZodType>>;
      /** The variant used when the key is not given. */
      readonly default: string;
    }
  | {
      readonly kind: 'map';
      readonly description: string;
      readonly value: z.ZodType;
      readonly default: Readonly<Record<string, unknown>>;
    };

const registry = new WeakMap<z.ZodType, SettingsNode>();

/** The registry entry of a settings schema, or undefined for a schema not built by `s.*`. */
export function settingsNode(schema: z.ZodType): SettingsNode | undefined {
  return registry.get(schema);
}

/**
 * The section schema of a `variants` node for `input`: the variant its key names, or the default
 * one when the key is not given. Undefined when the key names no variant.
 */
export function variantSchema(
  node: SettingsNode & { kind: 'variants' },
  input: unknown,
): z.ZodType | undefined {
  const tag =
    typeof input === 'object' && input !== null && !Array.isArray(input)
      ? ((input as Record<string, unknown>)[node.key] ?? node.default)
      : node.default;
  return typeof tag === 'string' && Object.hasOwn(node.variants, tag) ? node.variants[tag] : undefined;
}

/** Like `settingsNode`, but a schema not built by `s.*` is a programming error. */
export function requireNode(schema: z.ZodType, where: string): SettingsNode {
  const node = registry.get(schema);
  if (node === undefined) {
    throw new TypeError(`settings: ${where} is not a settings schema; build it with the s.* helpers`);
  }
  return node;
}

/** Describes a value the way error messages show it: `123`, `"abc"`, `a list`, `null`. */
export function showValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

/** A zod `error` option that words an issue as "expected <text>, got <input>". */
function expected(text: string) {
  return { error: (iss: { input?: unknown }) => `expected ${text}, got ${showValue(iss.input)}` };
}

function register<S extends z.ZodType>(schema: S, node: SettingsNode): S {
  if (typeof node.description !== 'string' || node.description.trim() === '') {
    throw new TypeError('settings: every field needs a non-empty description');
  }
  registry.set(schema, node);
  return schema;
}

/** Builds a leaf: validates the default through `base` now, then attaches default and description. */
function leaf<B extends z.ZodType>(description: string, base: B, def: z.input<B>) {
  const check = base.safeParse(def);
  if (!check.success) {
    throw new TypeError(
      `settings: default ${showValue(def)} of "${description}" is invalid: ${check.error.issues[0]?.message}`,
    );
  }
  return register(base.prefault(def as never).describe(description), {
    kind: 'leaf',
    description,
    default: def,
  });
}

/** A string parsed by `parse`, which returns the value or `{ error }` with a reason. */
function parsedString<T>(what: string, parse: (text: string) => T | { error: string }) {
  return z.string(expected(what)).transform((text, ctx): T => {
    const r = parse(text);
    if (typeof r === 'object' && r !== null && 'error' in r) {
      ctx.addIssue({
        code: 'custom',
        input: text,
        message: `expected ${what}, got ${showValue(text)} (${r.error})`,
      });
      return z.NEVER;
    }
    return r as T;
  });
}

function rangeText(min: number | undefined, max: number | undefined): string {
  if (min !== undefined && max !== undefined) return ` from ${min} to ${max}`;
  if (min !== undefined) return ` of at least ${min}`;
  if (max !== undefined) return ` of at most ${max}`;
  return '';
}

function numberLeaf(
  kind: 'an integer' | 'a number',
  description: string,
  def: number,
  range: { min?: number; max?: number },
) {
  const text = kind + rangeText(range.min, range.max);
  let base = z.number(expected(text));
  if (kind === 'an integer') base = base.int(expected(text));
  if (range.min !== undefined) base = base.min(range.min, expected(text));
  if (range.max !== undefined) base = base.max(range.max, expected(text));
  return leaf(description, base, def);
}

/** A bound of `s.duration`'s range, in milliseconds; a bad one is a programming error. */
function durationBound(text: string, which: 'min' | 'max', description: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms > MAX_TIMER_MS) {
    throw new TypeError(
      `settings: ${which} ${showValue(text)} of "${description}" is not a duration of at most ${formatDuration(MAX_TIMER_MS)}`,
    );
  }
  return ms;
}

/**
 * A duration in `[min, max]` milliseconds. `max` is at most {@link MAX_TIMER_MS}: settings
 * durations end up in timers, and Node fires a longer timer after 1 ms.
 */
function durationSchema(description: string, range: { min?: string; max?: string }) {
  const min = range.min === undefined ? 0 : durationBound(range.min, 'min', description);
  const max = range.max === undefined ? MAX_TIMER_MS : durationBound(range.max, 'max', description);
  if (min > max) throw new TypeError(`settings: "${description}" has min above max`);
  const tooLong =
    max === MAX_TIMER_MS
      ? `longer than ${formatDuration(max)}, the longest Node.js timer`
      : `longer than ${formatDuration(max)}`;
  return parsedString('a duration like "10s" or "250ms"', (text) => {
    const ms = parseDuration(text);
    if (ms === undefined) return { error: 'units: ms, s, m, h, d' };
    if (ms < min) return { error: `shorter than ${formatDuration(min)}` };
    if (ms > max) return { error: tooLong };
    return ms;
  });
}

const size = z
  .union([z.string(), z.number()], expected('a size like "16KiB" or a number of bytes'))
  .transform((input, ctx): number => {
    const bytes = parseSize(input);
    if (bytes === undefined) {
      ctx.addIssue({
        code: 'custom',
        input,
        message: `expected a size like "16KiB" or a number of bytes, got ${showValue(input)}`,
      });
      return z.NEVER;
    }
    return bytes;
  });

const cidr = parsedString<string>('a CIDR like "10.0.0.0/8"', parseCidr);

function boolLeaf(description: string, def: boolean) {
  return leaf(description, z.boolean(expected('true or false')), def);
}

function objectSchema<Shape extends Record<string, z.ZodType>>(description: string, shape: Shape) {
  for (const [key, field] of Object.entries(shape)) requireNode(field, `field "${key}" of "${description}"`);
  return register(
    z
      .strictObject(shape, expected('a mapping'))
      .prefault({} as never)
      .describe(description),
    {
      kind: 'object',
      description,
      shape,
    },
  );
}

/** The section of one variant: its fields after the discriminating key. */
type VariantOutput<K extends string, N extends string, Shape extends Record<string, z.ZodType>> = {
  readonly [P in K]: N;
} & z.output<z.ZodObject<Shape>>;

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function variantsSchema<
  K extends string,
  V extends Record<string, Record<string, z.ZodType>>,
  D extends keyof V & string,
>(description: string, key: K, keyDescription: string, variants: V, def: D) {
  const names = Object.keys(variants);
  if (!names.includes(def)) throw new TypeError(`settings: "${description}" has no variant "${def}"`);
  const sections: Record<string, z.ZodType> = {};
  const options: z.ZodObject[] = [];
  for (const name of names) {
    const shape = variants[name] as Record<string, z.ZodType>;
    if (key in shape)
      throw new TypeError(`settings: variant "${name}" of "${description}" must not define "${key}"`);
    for (const [k, field] of Object.entries(shape)) requireNode(field, `field "${k}" of "${description}"`);
    // The key is a bare literal (a prefault would hide it from the union's discriminator); the
    // preprocess below fills in the default variant's name when it is not given.
    const tag = register(z.literal(name).describe(keyDescription), {
      kind: 'leaf',
      description: keyDescription,
      default: name,
    });
    const full = { [key]: tag, ...shape };
    const section = register(z.strictObject(full, expected('a mapping')).describe(description), {
      kind: 'object',
      description,
      shape: full,
    });
    sections[name] = section;
    options.push(section as z.ZodObject);
  }
  const union = z.discriminatedUnion(key, options as [z.ZodObject, ...z.ZodObject[]], {
    error: (iss: { input?: unknown }) =>
      isPlainRecord(iss.input) && iss.input[key] !== undefined
        ? `expected one of ${names.map((n) => JSON.stringify(n)).join(', ')}, got ${showValue(iss.input[key])}`
        : 'expected a mapping',
  });
  const withDefault = z.preprocess(
    (v) =>
      v === undefined ? { [key]: def } : isPlainRecord(v) && v[key] === undefined ? { ...v, [key]: def } : v,
    union,
  );
  type Out = { [N in keyof V & string]: VariantOutput<K, N, V[N]> }[keyof V & string];
  return register(withDefault.describe(description), {
    kind: 'variants',
    description,
    key,
    variants: sections,
    default: def,
  }) as unknown as z.ZodType<Out, unknown>;
}

/** The settings helpers. Each takes the field's description first and its default second. */
export const s = {
  /** A string. */
  str: (description: string, def: string) => leaf(description, z.string(expected('a string')), def),
  /** A whole number, optionally bounded (inclusive). */
  int: (description: string, def: number, range: { min?: number; max?: number } = {}) =>
    numberLeaf('an integer', description, def, range),
  /** A finite number, optionally bounded (inclusive). */
  num: (description: string, def: number, range: { min?: number; max?: number } = {}) =>
    numberLeaf('a number', description, def, range),
  /** `true` or `false`. */
  bool: boolLeaf,
  /** A file system path, kept as written (relative paths resolve against the working directory). */
  path: (description: string, def: string) => leaf(description, z.string(expected('a file path')), def),
  /** One of a fixed set of strings. */
  oneOf: <const T extends readonly [string, ...string[]]>(description: string, values: T, def: T[number]) =>
    leaf(
      description,
      z.enum(values, expected(`one of ${values.map((v) => JSON.stringify(v)).join(', ')}`)),
      def,
    ),
  /** `~` (null, the default) or a value of `inner` (a leaf or list helper; its default is not used). */
  optional: <I extends z.ZodType>(description: string, inner: I) => {
    const node = requireNode(inner, `the inner schema of "${description}"`);
    if (node.kind === 'object' || node.kind === 'map' || node.kind === 'variants') {
      throw new TypeError(`settings: "${description}": a section cannot be optional; use s.enabled`);
    }
    return register(
      z
        .nullable(inner)
        .prefault(null as never)
        .describe(description),
      {
        kind: 'optional',
        description,
        inner,
      },
    );
  },
  /** `host:port` or `[v6]:port` to connect to, parsed to `{ host, port }`; port 0 is refused. */
  socketAddr: (description: string, def: string) =>
    leaf(description, parsedString<SocketAddr>('"host:port"', parseTargetAddr), def),
  /** `host:port`, `[v6]:port` or an absolute Unix socket path, parsed to a `ListenAddr`. */
  listenAddr: (description: string, def: string) =>
    leaf(
      description,
      parsedString<ListenAddr>('"host:port" or an absolute socket path', parseListenAddr),
      def,
    ),
  /**
   * A duration string (`10s`, `250ms`, `1m30s`), parsed to milliseconds, optionally bounded
   * (inclusive, as duration strings). Never longer than {@link MAX_TIMER_MS} (24.8 days), the
   * longest Node.js timer: `max` may only lower that cap.
   */
  duration: (description: string, def: string, range: { min?: string; max?: string } = {}) =>
    leaf(description, durationSchema(description, range), def),
  /** A size (`16KiB`, `1MiB`, `10MB`) or a number of bytes, parsed to bytes. */
  size: (description: string, def: string | number) =>
    leaf(description, size, typeof def === 'number' ? formatSize(def) : def),
  /** A list of IPv4/IPv6 CIDR blocks, parsed to their normalised form. */
  cidrList: (description: string, def: readonly string[]) => {
    const base = z.array(cidr, expected('a list of CIDRs'));
    leaf(description, base, [...def]); // validates the default
    return register(base.prefault([...def]).describe(description), {
      kind: 'list',
      description,
      item: undefined,
      default: def,
    });
  },
  /** A list of `item` values (an `s.*` schema; its own default is not used). */
  list: <I extends z.ZodType>(description: string, item: I, def: readonly z.input<I>[]) => {
    requireNode(item, `the item schema of "${description}"`);
    const base = z.array(item, expected('a list'));
    leaf(description, base, [...def] as never);
    return register(base.prefault([...def] as never).describe(description), {
      kind: 'list',
      description,
      item,
      default: def,
    });
  },
  /**
   * Named entries (a YAML mapping), each a `value`; an entry a user writes is completed with the
   * value schema's defaults. `defaults` are the entries used when the map is not set at all.
   */
  map: <V extends z.ZodType>(
    description: string,
    value: V,
    defaults: Readonly<Record<string, z.input<V>>>,
  ) => {
    requireNode(value, `the value schema of "${description}"`);
    const base = z.record(z.string(), value, expected('a mapping of names to entries'));
    leaf(description, base, { ...defaults } as never);
    return register(base.prefault({ ...defaults } as never).describe(description), {
      kind: 'map',
      description,
      value,
      default: defaults,
    });
  },
  /** A section: a fixed set of fields. Its default is every field's default; unknown keys are errors. */
  object: objectSchema,
  /**
   * A section of several kinds, picked by the value of `key` (`def` when it is not given): each
   * variant has its own fields, so a config (and the generated YAML) shows only the keys that
   * apply to its kind, and a key of another kind is an unknown key.
   */
  variants: variantsSchema,
  /**
   * An optional subsystem: a section whose first key is `enabled`, with its knobs always present
   * (and shown in the generated config) whether it is on or not.
   */
  enabled: <Shape extends Record<string, z.ZodType>>(
    description: string,
    on: boolean,
    shape: Shape,
    enabledDescription = 'Turns this on or off; the other keys here apply only when it is on.',
  ) => {
    if ('enabled' in shape)
      throw new TypeError(`settings: "${description}" must not define "enabled" itself`);
    return objectSchema(description, { enabled: boolLeaf(enabledDescription, on), ...shape });
  },
};

/** The value type a settings schema parses to. */
export type Infer<S extends z.ZodType> = z.output<S>;
