/**
 * Tests of the hook reference generator, and the check that keeps `docs/hooks.md` current:
 * `npm test` fails here when the committed reference differs from what the hooks' TSDoc and
 * `TRAFFIC_FLOWS` generate.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { HOOK_METHODS } from '../packages/oxy/src/hooks/run.ts';
import { HOOK_ORDERS, TRAFFIC_FLOWS } from '../packages/oxy/src/testing/hook-orders.ts';
import { GROUP_LABELS } from '../packages/oxy/src/testing/recorder.ts';
import {
  checkDoc,
  extractModule,
  extractModules,
  formatMarkdown,
  generateHooksDoc,
  HooksDocError,
  hooksInterfaceOf,
  renderDocFile,
  renderSequenceDiagram,
  slug,
} from './gen-hooks-doc.ts';

const SCRIPT = path.join(import.meta.dirname, 'gen-hooks-doc.ts');

const FIXTURE = `/**
 * \`DemoHook\`: a module comment.
 */
import type { X } from './x.ts';

/** What to do. Build one with {@link DemoDecision}. */
export type DemoDecision = { readonly kind: 'go' } | { readonly kind: 'stop'; readonly status: number };

/** Constructors of {@link DemoDecision}. */
export const DemoDecision = {
  /** Go on. */
  go: (): DemoDecision => ({ kind: 'go' }),
  /** Stop with \`status\` (default 403). */
  stop: (status = 403): DemoDecision => ({ kind: 'stop', status }),
} as const;

/** Hooks on demos. */
export interface DemoHook<X> {
  /** Fires once per demo. Default: {@link DemoDecision.go}, see {@link Missing}. */
  handleDemo?(name: string,
      ctx: X): DemoDecision | Promise<DemoDecision>;
}

export const DEMO_HOOK_METHODS = ['handleDemo'] as const;
`;

describe('gen-hooks-doc', () => {
  it('docs/hooks.md is up to date (run `npm run docs:hooks` when this fails)', () => {
    const r = spawnSync(process.execPath, [SCRIPT, '--check'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('--check names the first differing line of a stale file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hooks-doc-'));
    try {
      const file = path.join(dir, 'hooks.md');
      const text = renderDocFile();
      fs.writeFileSync(file, text.replace('# Hook reference', '# Hook reference (edited)'));
      assert.match(checkDoc(file, text) ?? '', /differs from line 4:\n.*\(edited\)\n.*# Hook reference$/);
      fs.writeFileSync(file, text);
      assert.equal(checkDoc(file, text), null);
      assert.match(checkDoc(path.join(dir, 'none.md'), text) ?? '', /does not exist/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects an unknown argument with exit code 2', () => {
    const r = spawnSync(process.execPath, [SCRIPT, '--chek'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown argument --chek/);
  });

  it('reads hooks, signatures as written, decisions and their constructors', () => {
    const m = extractModule('demo.ts', FIXTURE);
    assert.equal(m.doc, '`DemoHook`: a module comment.');
    assert.deepEqual(
      m.hooks.map((h) => [h.name, h.doc]),
      [['DemoHook', 'Hooks on demos.']],
    );
    assert.deepEqual(m.hooks[0]?.methods, [
      {
        name: 'handleDemo',
        signature: 'handleDemo?(name: string, ctx: X): DemoDecision | Promise<DemoDecision>',
        doc: 'Fires once per demo. Default: {@link DemoDecision.go}, see {@link Missing}.',
      },
    ]);
    assert.deepEqual(
      m.types.map((t) => t.name),
      ['DemoDecision'],
    );
    assert.deepEqual(
      m.types[0]?.constructors.map((c) => [c.signature, c.doc]),
      [
        ['DemoDecision.go(): DemoDecision', 'Go on.'],
        ['DemoDecision.stop(status = 403): DemoDecision', 'Stop with `status` (default 403).'],
      ],
    );
  });

  it('a hook method without TSDoc is an error naming it', () => {
    const bad = FIXTURE.replace(
      '/** Fires once per demo. Default: {@link DemoDecision.go}, see {@link Missing}. */',
      '',
    );
    assert.throws(
      () => extractModule('demo.ts', bad),
      (e: unknown) => {
        assert.ok(e instanceof HooksDocError);
        assert.match(e.message, /^demo\.ts: DemoHook\.handleDemo has no TSDoc/);
        return true;
      },
    );
  });

  it('a property on a hook interface is an error naming it', () => {
    const bad = FIXTURE.replace(
      'export interface DemoHook<X> {',
      'export interface DemoHook<X> {\n  /** x */ n: number;',
    );
    assert.throws(() => extractModule('demo.ts', bad), /demo\.ts: DemoHook\.n is not a method/);
  });

  it('renders links to documented names and code for the rest, deterministically', () => {
    const modules = [extractModule('demo.ts', FIXTURE)];
    const opts = {
      modules,
      flows: {},
      intro: 'Intro.',
      hooksInterface: 'interface Hooks {}',
      contexts: null,
    };
    const text = generateHooksDoc(opts);
    assert.equal(generateHooksDoc(opts), text);
    assert.match(text, /^What to do\. Build one with \[`DemoDecision`\]\(#demodecision\)\.$/m);
    assert.match(text, /Default: `DemoDecision.go`, see `Missing`\./);
    assert.match(text, /### `DemoHook\.handleDemo`\n\n```ts\nhandleDemo\?\(name: string, ctx: X\)/);
    assert.match(
      text,
      /\| `DemoDecision\.stop\(status = 403\): DemoDecision` \| Stop with `status` \(default 403\)\. \|/,
    );
    assert.match(text, /- \[`DemoHook`\]\(#demohook\)\n {2}- \[`handleDemo`\]\(#demohookhandledemo\)/);
  });

  it('draws a flow as a numbered sequence diagram, escaping what mermaid reads as syntax', () => {
    const diagram = renderSequenceDiagram({
      title: 't',
      description: 'd',
      steps: [
        { from: 'Client', to: 'Oxy', message: 'a; b #1' },
        { hook: 'ingress.handleConnection', answer: 'allow' },
        { note: 'check' },
        { hook: 'ingress.handleConnectionClose' },
      ],
    });
    assert.equal(
      diagram.split('\n').slice(5).join('\n'),
      [
        '    Client->>Oxy: a#59; b #35;1',
        '    Oxy->>App: 1. ingress.handleConnection',
        '    App-->>Oxy: allow',
        '    Note over Oxy: check',
        '    Oxy->>App: 2. ingress.handleConnectionClose',
      ].join('\n'),
    );
  });

  it('writes what Biome would format, so `npm run check` passes on the generated file', () => {
    const text = renderDocFile();
    assert.equal(formatMarkdown(text), text);
    assert.match(text, /^\| Constructor +\| Meaning +\|$/m);
  });

  it('makes anchors as GitHub does', () => {
    assert.equal(slug('`IngressHook.handleConnection`'), 'ingresshookhandleconnection');
    assert.equal(slug('CONNECT tunnel over HTTP/1.1'), 'connect-tunnel-over-http11');
    assert.equal(slug('What start() returns'), 'what-start-returns');
  });

  it('finds the Hooks interface, and says so when it is missing', () => {
    assert.match(hooksInterfaceOf('export interface Hooks { a?: 1 }'), /^interface Hooks/);
    assert.throws(
      () => hooksInterfaceOf('export interface Other {}', 'run.ts'),
      /run\.ts: no exported interface Hooks/,
    );
  });

  it('documents the contexts hooks receive', () => {
    const text = generateHooksDoc();
    for (const name of ['IngressContext', 'RequestContext', 'EgressContext', 'ConnectionStats']) {
      assert.match(text, new RegExp(`^### \`${name}\`\n\n.+\n`, 'm'), `${name} is not documented`);
    }
  });

  it('documents every hook method Oxy accepts, and every hook the orders name exists', () => {
    const documented = new Set(
      extractModules().flatMap((m) => m.hooks.flatMap((h) => h.methods.map((x) => x.name))),
    );
    const labels: string[] = [];
    for (const [group, methods] of Object.entries(HOOK_METHODS)) {
      for (const method of methods) {
        assert.ok(documented.has(method), `${group}.${method} is not in the reference`);
        labels.push(`${GROUP_LABELS[group as keyof typeof GROUP_LABELS]}.${method}`);
      }
    }
    for (const [kind, order] of Object.entries(HOOK_ORDERS)) {
      for (const hook of order) assert.ok(labels.includes(hook), `HOOK_ORDERS.${kind} names unknown ${hook}`);
      assert.ok(kind in TRAFFIC_FLOWS);
    }
  });
});
