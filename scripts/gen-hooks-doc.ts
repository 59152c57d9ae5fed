/**
 * Generates `docs/hooks.md`, the hook reference, from the code itself (as mitmproxy does), so
 * the reference cannot say something the code does not:
 *
 * - each exported `XxxHook` interface in `packages/oxy/src/hooks/*.ts`, read with the
 *   TypeScript compiler API: its module's and its own TSDoc, and per method the signature as
 *   written and the TSDoc (when it fires, what each answer means, the default);
 * - the decision unions and other exported types of the same modules, with their constructors,
 *   and the contexts hooks receive (`packages/oxy/src/context/contexts.ts`);
 * - the order in which hooks fire per kind of traffic, drawn as mermaid sequence diagrams from
 *   `TRAFFIC_FLOWS` in `packages/oxy/src/testing/hook-orders.ts`, the data that
 *   `packages/oxy/test/hook-order.test.ts` checks against a real proxy.
 *
 * Usage: `node scripts/gen-hooks-doc.ts` writes the file; `--check` exits 1 when the file
 * differs from what would be generated (run by `scripts/gen-hooks-doc.test.ts`, so `npm test`
 * fails on a stale reference). Output is deterministic: modules in data-path order, members in
 * source order, no dates. A hook method without TSDoc is an error naming it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { hookOrder, TRAFFIC_FLOWS, type TrafficFlow } from '../packages/oxy/src/testing/hook-orders.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Where the generated reference is written. */
export const DOC_PATH = path.join(ROOT, 'docs/hooks.md');
const HOOKS_DIR = path.join(ROOT, 'packages/oxy/src/hooks');
const INTRO_PATH = path.join(ROOT, 'docs/hooks.intro.md');
/** Modules in the order a connection meets them; any other module follows, sorted by name. */
const MODULE_ORDER = [
  'ingress.ts',
  'http-request.ts',
  'http-body.ts',
  'egress.ts',
  'tunnel.ts',
  'lifecycle.ts',
];
const HOOK_NAME = /^[A-Z]\w*Hook$/;

/** A bad source for the reference (e.g. a hook method without TSDoc); the message names it. */
export class HooksDocError extends Error {
  override readonly name = 'HooksDocError';
}

/** A documented member: a hook method or a decision constructor. */
export interface MemberDoc {
  readonly name: string;
  /** The signature as written, whitespace normalised. */
  readonly signature: string;
  readonly doc: string;
}

/** An exported hook interface. */
export interface HookDoc {
  readonly name: string;
  readonly doc: string;
  readonly methods: readonly MemberDoc[];
}

/** An exported type (decision union, head, pipeline…) and its constructors, if any. */
export interface TypeDoc {
  readonly name: string;
  /** The declaration as written, without `export` and comments outside it. */
  readonly declaration: string;
  readonly doc: string;
  readonly constructors: readonly MemberDoc[];
}

/** What one hooks module documents. */
export interface ModuleDoc {
  readonly file: string;
  readonly doc: string;
  readonly hooks: readonly HookDoc[];
  readonly types: readonly TypeDoc[];
}

function docOf(node: ts.Node): string {
  const docs = ts.getJSDocCommentsAndTags(node).filter(ts.isJSDoc);
  const last = docs.at(-1);
  if (last === undefined) return '';
  const parts = [ts.getTextOfJSDocComment(last.comment) ?? ''];
  for (const tag of last.tags ?? []) {
    parts.push(`**@${tag.tagName.text}** ${ts.getTextOfJSDocComment(tag.comment) ?? ''}`.trim());
  }
  return parts.join('\n\n').trim();
}

/** The module comment: the first JSDoc of the file when another comment or an import follows it. */
function moduleDocOf(sf: ts.SourceFile): string {
  const first = sf.statements[0];
  if (first === undefined) return '';
  const ranges = (ts.getLeadingCommentRanges(sf.text, first.getFullStart()) ?? []).filter((r) =>
    sf.text.startsWith('/**', r.pos),
  );
  const isImport = ts.isImportDeclaration(first) || ts.isExportDeclaration(first);
  if (ranges.length === 0 || (ranges.length === 1 && !isImport)) return '';
  const r = ranges[0]!;
  return sf.text
    .slice(r.pos + 3, r.end - 2)
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
}

const squash = (s: string): string => s.replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/,? \)/g, ')');

function isExported(node: ts.Node): boolean {
  return (
    ts.canHaveModifiers(node) &&
    (ts.getModifiers(node) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword)
  );
}

/** `name?(a: A, b: B): R`, with the parameters on their own lines when it is long. */
function signatureOf(
  name: string,
  params: readonly ts.ParameterDeclaration[],
  ret: ts.TypeNode | undefined,
  sf: ts.SourceFile,
): string {
  const ps = params.map((p) => squash(p.getText(sf)));
  const tail = ret === undefined ? '' : `: ${squash(ret.getText(sf))}`;
  const line = `${name}(${ps.join(', ')})${tail}`;
  return line.length <= 100 ? line : `${name}(\n${ps.map((p) => `  ${p},`).join('\n')}\n)${tail}`;
}

function hookOf(decl: ts.InterfaceDeclaration, sf: ts.SourceFile, file: string): HookDoc {
  const methods = decl.members.map((m): MemberDoc => {
    const name = m.name?.getText(sf) ?? '(unnamed)';
    if (!ts.isMethodSignature(m)) {
      throw new HooksDocError(`${file}: ${decl.name.text}.${name} is not a method; hooks have only methods`);
    }
    const doc = docOf(m);
    if (doc === '') {
      throw new HooksDocError(
        `${file}: ${decl.name.text}.${name} has no TSDoc (say when it fires, what each answer means, the default)`,
      );
    }
    return {
      name,
      signature: signatureOf(`${name}${m.questionToken ? '?' : ''}`, m.parameters, m.type, sf),
      doc,
    };
  });
  const typeParams = decl.typeParameters
    ? `<${decl.typeParameters.map((t) => t.getText(sf)).join(', ')}>`
    : '';
  return { name: `${decl.name.text}`, doc: docOf(decl) || `${decl.name.text}${typeParams}`, methods };
}

function constructorsOf(init: ts.Expression, owner: string, sf: ts.SourceFile): MemberDoc[] {
  let e = init;
  while (ts.isAsExpression(e) || ts.isSatisfiesExpression(e) || ts.isParenthesizedExpression(e))
    e = e.expression;
  if (!ts.isObjectLiteralExpression(e)) return [];
  return e.properties.flatMap((p): MemberDoc[] => {
    if (!ts.isPropertyAssignment(p) || !ts.isArrowFunction(p.initializer)) return [];
    const fn = p.initializer;
    const name = `${owner}.${p.name.getText(sf)}`;
    return [{ name, signature: signatureOf(name, fn.parameters, fn.type, sf), doc: docOf(p) }];
  });
}

/** Reads one hooks module's source. `file` names it in errors. */
export function extractModule(file: string, text: string): ModuleDoc {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const hooks: HookDoc[] = [];
  const types: { name: string; declaration: string; doc: string }[] = [];
  const consts = new Map<string, ts.Expression>();
  for (const st of sf.statements) {
    if (!isExported(st)) continue;
    if (ts.isInterfaceDeclaration(st) && HOOK_NAME.test(st.name.text)) {
      hooks.push(hookOf(st, sf, file));
    } else if (ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st)) {
      const declaration = st.getText(sf).replace(/^export\s+/, '');
      types.push({ name: st.name.text, declaration, doc: docOf(st) });
    } else if (ts.isVariableStatement(st)) {
      for (const d of st.declarationList.declarations) {
        if (ts.isIdentifier(d.name) && d.initializer) consts.set(d.name.text, d.initializer);
      }
    }
  }
  return {
    file,
    doc: moduleDocOf(sf),
    hooks,
    types: types.map((t) => {
      const init = consts.get(t.name);
      return { ...t, constructors: init === undefined ? [] : constructorsOf(init, t.name, sf) };
    }),
  };
}

/** Reads every hooks module in `dir` (tests and `run.ts` aside), in data-path order. */
export function extractModules(dir = HOOKS_DIR): ModuleDoc[] {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .sort((a, b) => {
      const ia = MODULE_ORDER.indexOf(a);
      const ib = MODULE_ORDER.indexOf(b);
      return ia !== ib ? (ia === -1 ? 1 : ib === -1 ? -1 : ia - ib) : a < b ? -1 : a > b ? 1 : 0;
    });
  return files
    .map((f) => extractModule(`packages/oxy/src/hooks/${f}`, fs.readFileSync(path.join(dir, f), 'utf8')))
    .filter((m) => m.hooks.length > 0);
}

/** GitHub's heading anchor for `text` (lower case, punctuation dropped, spaces to dashes). */
export function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

const PARTICIPANT_IDS = { Client: 'Client', Oxy: 'Oxy', 'App hooks': 'App', Upstream: 'Upstream' } as const;
/** Mermaid reads `#` as an entity and `;` as a line end in message text: write them as entity codes. */
const mermaidText = (s: string): string => s.replace(/[#;]/g, (c) => (c === '#' ? '#35;' : '#59;'));

/** A flow as a mermaid sequence diagram; hook calls are numbered in order. */
export function renderSequenceDiagram(flow: TrafficFlow): string {
  const lines = [
    'sequenceDiagram',
    '    participant Client',
    '    participant Oxy',
    '    participant App as App hooks',
    '    participant Upstream',
  ];
  let n = 0;
  for (const step of flow.steps) {
    if ('hook' in step) {
      lines.push(`    Oxy->>App: ${++n}. ${step.hook}`);
      if (step.answer !== undefined) lines.push(`    App-->>Oxy: ${mermaidText(step.answer)}`);
    } else if ('note' in step) {
      lines.push(`    Note over Oxy: ${mermaidText(step.note)}`);
    } else {
      const arrow = step.from === 'Upstream' || step.to === 'Client' ? '-->>' : '->>';
      lines.push(
        `    ${PARTICIPANT_IDS[step.from]}${arrow}${PARTICIPANT_IDS[step.to]}: ${mermaidText(step.message)}`,
      );
    }
  }
  return lines.join('\n');
}

/** Inputs of {@link generateHooksDoc}; the defaults read the repository. */
export interface GenerateOptions {
  readonly modules?: readonly ModuleDoc[];
  readonly flows?: Readonly<Record<string, TrafficFlow>>;
  readonly intro?: string;
  /** The `Hooks` interface an app's `start()` returns, as written. */
  readonly hooksInterface?: string;
  /** The contexts module (what `ctx` holds); `null` leaves the section out. */
  readonly contexts?: ModuleDoc | null;
}

const CONTEXTS_FILE = 'packages/oxy/src/context/contexts.ts';

/** Each type as a heading, its TSDoc, its declaration and its constructors' table. */
function renderTypes(types: readonly TypeDoc[], link: (text: string) => string): string[] {
  const out: string[] = [];
  for (const t of types) {
    out.push('', `### \`${t.name}\``, '');
    if (t.doc !== '') out.push(link(t.doc), '');
    out.push('```ts', t.declaration, '```');
    if (t.constructors.length === 0) continue;
    out.push('', '| Constructor | Meaning |', '| --- | --- |');
    for (const c of t.constructors) {
      const sig = c.signature.replace(/\s+/g, ' ').replace(/\|/g, '\\|');
      out.push(`| \`${sig}\` | ${link(c.doc).replace(/\n+/g, ' ').replace(/\|/g, '\\|')} |`);
    }
  }
  return out;
}

/** The declaration of the `Hooks` interface in `run.ts` (the groups `start()` returns). */
export function hooksInterfaceOf(text: string, file = 'packages/oxy/src/hooks/run.ts'): string {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const decl = sf.statements.find((s) => ts.isInterfaceDeclaration(s) && s.name.text === 'Hooks');
  if (decl === undefined) throw new HooksDocError(`${file}: no exported interface Hooks`);
  return decl.getText(sf).replace(/^export\s+/, '');
}

/** Recorder group labels (`http.handleRequest`) to interface names, for links from the diagrams. */
const LABEL_TO_HOOK: Readonly<Record<string, string>> = {
  lifecycle: 'AppLifecycleHook',
  ingress: 'IngressHook',
  http: 'HttpRequestHook',
  httpBody: 'HttpBodyHook',
  tunnel: 'TunnelHook',
  egress: 'EgressHook',
};

/** The whole reference as Markdown. */
export function generateHooksDoc(options: GenerateOptions = {}): string {
  const modules = options.modules ?? extractModules();
  const flows = options.flows ?? TRAFFIC_FLOWS;
  const intro =
    options.intro ?? (fs.existsSync(INTRO_PATH) ? fs.readFileSync(INTRO_PATH, 'utf8').trim() : '');
  const hooksInterface =
    options.hooksInterface ?? hooksInterfaceOf(fs.readFileSync(path.join(HOOKS_DIR, 'run.ts'), 'utf8'));
  const contexts =
    options.contexts === undefined
      ? extractModule(CONTEXTS_FILE, fs.readFileSync(path.join(ROOT, CONTEXTS_FILE), 'utf8'))
      : options.contexts;
  const anchors = new Map<string, string>();
  const used = new Map<string, number>();
  const heading = (text: string): string => {
    const base = slug(text);
    const n = used.get(base) ?? 0;
    used.set(base, n + 1);
    return n === 0 ? base : `${base}-${n}`;
  };
  // Anchors first, so {@link X} can point at any documented name, wherever it is.
  const hooksAnchor = heading('What start() returns');
  const flowAnchor = heading('Hook order by traffic');
  const flowAnchors = Object.values(flows).map((f) => heading(f.title));
  for (const m of modules) {
    for (const h of m.hooks) {
      anchors.set(h.name, heading(`\`${h.name}\``));
      for (const meth of h.methods)
        anchors.set(`${h.name}.${meth.name}`, heading(`\`${h.name}.${meth.name}\``));
    }
    if (m.types.length > 0) heading(`Types of ${m.file.split('/').at(-1)}`);
    for (const t of m.types) anchors.set(t.name, heading(`\`${t.name}\``));
  }
  const contextsAnchor = contexts === null ? '' : heading('Contexts');
  for (const t of contexts?.types ?? []) anchors.set(t.name, heading(`\`${t.name}\``));
  const link = (text: string): string =>
    text.replace(/\{@link\s+([^}\s|]+)\s*(?:\|\s*([^}]*))?\}/g, (_all, name: string, label?: string) => {
      const a = anchors.get(name);
      const shown = label?.trim() || `\`${name}\``;
      return a === undefined ? shown : `[${shown}](#${a})`;
    });

  const out: string[] = [
    '<!-- Generated by scripts/gen-hooks-doc.ts from packages/oxy/src/hooks/*.ts and',
    '     packages/oxy/src/testing/hook-orders.ts. Do not edit: run `npm run docs:hooks`. -->',
    '',
    '# Hook reference',
    '',
  ];
  if (intro !== '') out.push(intro, '');
  out.push(
    '## Contents',
    '',
    `- [What start() returns](#${hooksAnchor})`,
    `- [Hook order by traffic](#${flowAnchor})`,
  );
  for (const [i, f] of Object.values(flows).entries()) out.push(`  - [${f.title}](#${flowAnchors[i]})`);
  for (const m of modules) {
    for (const h of m.hooks) {
      out.push(`- [\`${h.name}\`](#${anchors.get(h.name)})`);
      for (const meth of h.methods)
        out.push(`  - [\`${meth.name}\`](#${anchors.get(`${h.name}.${meth.name}`)})`);
    }
    for (const t of m.types) out.push(`  - [\`${t.name}\`](#${anchors.get(t.name)})`);
  }
  if (contexts !== null) {
    out.push(`- [Contexts](#${contextsAnchor})`);
    for (const t of contexts.types) out.push(`  - [\`${t.name}\`](#${anchors.get(t.name)})`);
  }
  out.push('', '## What start() returns', '', 'Source: `packages/oxy/src/hooks/run.ts`', '');
  out.push('```ts', hooksInterface, '```', '', '## Hook order by traffic', '');
  out.push(
    'Each diagram shows one client connection to an app that implements every hook and answers',
    'the defaults. The numbered hook calls are `HOOK_ORDERS[kind]` in',
    '`packages/oxy/src/testing/hook-orders.ts`; `packages/oxy/test/hook-order.test.ts` drives the',
    'same traffic through a real proxy and fails unless the recorded order is exactly that list.',
    'Wire messages and notes are there for the reader and are not checked.',
  );
  for (const [kind, flow] of Object.entries(flows)) {
    out.push('', `### ${flow.title}`, '', `${flow.description} Checked as \`HOOK_ORDERS.${kind}\`.`);
    out.push('', '```mermaid', renderSequenceDiagram(flow), '```', '');
    hookOrder(flow).forEach((h, i) => {
      const [label = '', method = ''] = h.split('.');
      const a = anchors.get(`${LABEL_TO_HOOK[label] ?? ''}.${method}`);
      out.push(`${i + 1}. ${a === undefined ? `\`${h}\`` : `[\`${h}\`](#${a})`}`);
    });
  }
  for (const m of modules) {
    for (const h of m.hooks) {
      out.push('', `## \`${h.name}\``, '', `Source: \`${m.file}\``, '');
      if (m.doc !== '') out.push(link(m.doc), '');
      out.push(link(h.doc));
      for (const meth of h.methods) {
        out.push(
          '',
          `### \`${h.name}.${meth.name}\``,
          '',
          '```ts',
          meth.signature,
          '```',
          '',
          link(meth.doc),
        );
      }
    }
    if (m.types.length === 0) continue;
    out.push('', `## Types of ${m.file.split('/').at(-1)}`, ...renderTypes(m.types, link));
  }
  if (contexts !== null) {
    out.push('', '## Contexts', '', `Source: \`${contexts.file}\``, '');
    if (contexts.doc !== '') out.push(link(contexts.doc));
    out.push(...renderTypes(contexts.types, link));
  }
  return `${out.join('\n')}\n`;
}

/**
 * Formats Markdown as the repository's Biome does (`npm run check` formats `docs/` too), so the
 * generated file passes that check unchanged.
 */
export function formatMarkdown(text: string): string {
  const biome = path.join(ROOT, 'node_modules/.bin/biome');
  const r = spawnSync(biome, ['format', `--stdin-file-path=${DOC_PATH}`], { input: text, encoding: 'utf8' });
  if (r.status !== 0) {
    throw new HooksDocError(`biome format failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr}`);
  }
  return r.stdout;
}

/** The reference as written to `docs/hooks.md`: generated, then formatted. */
export function renderDocFile(): string {
  return formatMarkdown(generateHooksDoc());
}

/** Compares `file` with the generated text; returns null when equal, else what differs first. */
export function checkDoc(file: string = DOC_PATH, expected: string = renderDocFile()): string | null {
  const actual = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
  if (actual === expected) return null;
  if (actual === null) return `${path.relative(ROOT, file)} does not exist`;
  const a = actual.split('\n');
  const e = expected.split('\n');
  let i = 0;
  while (i < a.length && a[i] === e[i]) i++;
  return `${path.relative(ROOT, file)} differs from line ${i + 1}:\n  file:      ${a[i] ?? '(end)'}\n  generated: ${e[i] ?? '(end)'}`;
}

function main(argv: readonly string[]): number {
  const unknown = argv.filter((a) => a !== '--check');
  if (unknown.length > 0) {
    process.stderr.write(
      `gen-hooks-doc: unknown argument ${unknown[0]} (usage: gen-hooks-doc.ts [--check])\n`,
    );
    return 2;
  }
  const text = renderDocFile();
  if (argv.includes('--check')) {
    const diff = checkDoc(DOC_PATH, text);
    if (diff === null) return 0;
    process.stderr.write(
      `${diff}\nThe hook reference is out of date: run \`npm run docs:hooks\` and commit it.\n`,
    );
    return 1;
  }
  fs.writeFileSync(DOC_PATH, text);
  process.stdout.write(`wrote ${path.relative(ROOT, DOC_PATH)}\n`);
  return 0;
}

if (import.meta.main) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof HooksDocError)) throw e;
    process.stderr.write(`gen-hooks-doc: ${e.message}\n`);
    process.exitCode = 1;
  }
}
