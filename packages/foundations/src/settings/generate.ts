/**
 * Generating documentation from a settings schema: the complete config as annotated YAML (each
 * description as a comment above its key, map entries included), and a JSON Schema of the YAML (input) form for
 * editors. The YAML loads back to exactly the defaults (or to the given values).
 */
import YAML, { Pair, type Scalar, YAMLMap, YAMLSeq } from 'yaml';
import { z } from 'zod';
import { requireNode, type SettingsNode, settingsNode, variantSchema } from './schema.ts';

/** Options for `generateYaml`. */
export interface GenerateYamlOptions {
  /** Comment printed at the top of the file (may span lines), e.g. the service name. */
  readonly header?: string;
  /**
   * Input-form values to show instead of the defaults (e.g. merged config files); anything
   * they leave out is shown with its default.
   */
  readonly values?: unknown;
}

function comment(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((line) => (line.trim() === '' ? '' : ` ${line.trimEnd()}`))
    .join('\n');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function scalar(doc: YAML.Document, value: unknown): YAML.Node {
  const node = doc.createNode(value) as YAML.Node;
  // "host:port" strings stay readable to YAML 1.1 tools (which may read 1:30 as a number).
  if (YAML.isScalar(node) && typeof node.value === 'string' && node.value.includes(':')) {
    node.type = 'QUOTE_DOUBLE';
  }
  if (YAML.isCollection(node)) {
    YAML.visit(node, {
      Scalar(_key, n) {
        if (typeof n.value === 'string' && n.value.includes(':')) n.type = 'QUOTE_DOUBLE';
      },
    });
  }
  return node;
}

/** Builds the YAML node for `schema`, showing `input` where given and defaults elsewhere. */
function build(doc: YAML.Document, schema: z.ZodType, input: unknown): YAML.Node {
  const node: SettingsNode = requireNode(schema, 'a settings field');
  switch (node.kind) {
    case 'leaf':
      return scalar(doc, input === undefined ? node.default : input);
    case 'optional':
      return input === undefined || input === null ? scalar(doc, null) : scalar(doc, input);
    case 'list': {
      const items = Array.isArray(input) ? input : node.default;
      if (node.item === undefined || requireNode(node.item, 'a list item').kind !== 'object') {
        return scalar(doc, [...items]);
      }
      const seq = new YAMLSeq();
      for (const item of items) seq.items.push(build(doc, node.item, item));
      return seq;
    }
    case 'variants':
      // Only the keys of the kind shown: the given one, or the default kind.
      return build(doc, variantSchema(node, input) ?? (node.variants[node.default] as z.ZodType), input);
    case 'object': {
      const map = new YAMLMap();
      const given = isRecord(input) ? input : {};
      for (const [key, field] of Object.entries(node.shape)) {
        const keyNode = doc.createNode(key) as Scalar;
        keyNode.commentBefore = comment(requireNode(field, `field "${key}"`).description);
        map.items.push(new Pair(keyNode, build(doc, field, given[key])));
      }
      return map;
    }
    case 'map': {
      const map = new YAMLMap();
      const entries = isRecord(input) ? input : node.default;
      // Entries are named by the user (an endpoint's name): the comment says what one entry is.
      const what = requireNode(node.value, 'a map value').description;
      for (const [key, entry] of Object.entries(entries)) {
        if (entry === null) continue; // deleted by a later file
        const keyNode = doc.createNode(key) as Scalar;
        keyNode.commentBefore = comment(`"${key}": ${what}`);
        map.items.push(new Pair(keyNode, build(doc, node.value, entry)));
      }
      return map;
    }
  }
}

/**
 * The complete config for `schema` (built with `s.object`) as YAML: every key with its default
 * (or `opts.values`), and its description as a comment above it. Maps show their entries in full.
 */
export function generateYaml(schema: z.ZodType, opts: GenerateYamlOptions = {}): string {
  const doc = new YAML.Document();
  doc.contents = build(doc, schema, opts.values) as YAML.Document['contents'];
  if (opts.header !== undefined) doc.commentBefore = comment(opts.header);
  return doc.toString({
    nullStr: '~',
    lineWidth: 0,
    commentString: (text) => text.replace(/^/gm, '#'), // keep blank lines inside a comment as `#`
  });
}

/**
 * A JSON Schema (draft 2020-12) of the config file, i.e. of the *input* form: durations and
 * sizes are strings, addresses `"host:port"`; every property has its description and default.
 * Point an editor's YAML support at it (e.g. `# yaml-language-server: $schema=…`).
 */
export function toJsonSchema(schema: z.ZodType): Record<string, unknown> {
  requireNode(schema, 'the root schema');
  return z.toJSONSchema(schema, {
    io: 'input',
    unrepresentable: 'any',
    // What the loader takes and zod cannot tell from the schemas: a variant section may leave
    // out its key when it is the default variant (`endpoints: {main: {addr: …}}` is http), and
    // a map entry may be `~` to delete it.
    override: ({ zodSchema, jsonSchema }) => {
      const node = settingsNode(zodSchema as unknown as z.ZodType);
      if (node?.kind === 'variants') {
        for (const branch of (jsonSchema.oneOf ?? jsonSchema.anyOf ?? []) as Record<string, unknown>[]) {
          const props = branch.properties as Record<string, { const?: unknown }> | undefined;
          if (props?.[node.key]?.const !== node.default || !Array.isArray(branch.required)) continue;
          branch.required = branch.required.filter((k) => k !== node.key);
          if ((branch.required as unknown[]).length === 0) delete branch.required;
        }
      } else if (node?.kind === 'map' && typeof jsonSchema.additionalProperties === 'object') {
        const entry = jsonSchema.additionalProperties as Record<string, unknown>;
        if (Array.isArray(entry.oneOf)) entry.oneOf.push({ type: 'null' });
        else if (entry.type === 'object') entry.type = ['object', 'null'];
        else jsonSchema.additionalProperties = { anyOf: [entry, { type: 'null' }] };
      }
    },
  }) as Record<string, unknown>;
}

/**
 * The mapping-key lines of a generated `yaml` with no comment directly above them (for tests:
 * a generated config documents every key). A list item's first key may have its comment on the
 * item's dash line (`- # text`).
 */
export function uncommentedYamlKeys(yaml: string): string[] {
  const lines = yaml.split('\n');
  const missing: string[] = [];
  lines.forEach((line, i) => {
    if (/^\s*#/.test(line) || !/^\s*(- )?("[^"]*"|'[^']*'|[^\s#"'-][^:#]*):(\s|$)/.test(line)) return;
    if (!/^\s*(- )?#/.test(lines[i - 1] ?? '')) missing.push(`line ${i + 1}: ${line.trim()}`);
  });
  return missing;
}
