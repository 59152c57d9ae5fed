/**
 * Every YAML example in the README and docs/ is a configuration a reader copies: each one that
 * is a whole settings file passes the real `oxy --check` without a warning. The only failure
 * allowed is a certificate file the example names under /etc/oxy, which this machine lacks.
 * Blocks that are not whole files (one section's keys, alternatives of one key, another app's
 * settings) are listed below with the reason, and the list is checked to stay true.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { cleanEnv } from '../packages/foundations/test/fixtures/restart-harness.ts';

const root = path.join(import.meta.dirname, '..');
const MAIN = path.join(root, 'packages/oxy/src/main.ts');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-docs-examples-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Blocks that are not a settings file of the `oxy` program, by file and first line. */
const NOT_A_FILE: Record<string, string> = {
  'docs/foundations.md: # HTTP endpoints configuration.': "the Foundations example server's settings",
  'docs/proxy-protocol.md: proxy_protocol:': "the keys of one endpoint's proxy_protocol section",
  'docs/workers.md: workers: 1 # default: one process does everything, exactly as without this setting':
    'three alternatives for one key',
};

/** A missing file the example names only to show where one goes. */
const EXAMPLE_FILE = /^oxy: [\w.[\]]+: cannot read \/etc\/oxy\/[\w.-]+: ENOENT \(in [^)]+\)$/;

interface Block {
  key: string;
  yaml: string;
}

function yamlBlocks(): Block[] {
  const files = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).map((f) => `docs/${f}`)];
  const blocks: Block[] = [];
  for (const file of files.filter((f) => f.endsWith('.md'))) {
    const text = fs.readFileSync(path.join(root, file), 'utf8');
    // A block may be indented under a list item: its lines lose the fence's indentation.
    for (const m of text.matchAll(/^( *)```ya?ml\n([\s\S]*?)^\1```$/gm)) {
      const indent = (m[1] as string).length;
      const yaml = (m[2] as string)
        .split('\n')
        .map((l) => l.slice(indent))
        .join('\n');
      blocks.push({ key: `${file}: ${yaml.split('\n')[0]}`, yaml });
    }
  }
  return blocks;
}

const run = promisify(execFile);

async function check(block: Block, i: number): Promise<{ code: number; out: string }> {
  const file = path.join(dir, `example-${i}.yaml`);
  fs.writeFileSync(file, block.yaml);
  try {
    const r = await run(process.execPath, [MAIN, '--check', '-c', file], { cwd: dir, env: cleanEnv() });
    return { code: 0, out: `${r.stdout}${r.stderr}` };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, out: `${err.stdout}${err.stderr}` };
  }
}

test('every whole-file YAML example in the README and docs/ passes oxy --check without a warning', async () => {
  const blocks = yamlBlocks();
  for (const key of Object.keys(NOT_A_FILE))
    assert.ok(
      blocks.some((b) => b.key === key),
      `the exception "${key}" names no block: update NOT_A_FILE`,
    );
  const files = blocks.filter((b) => NOT_A_FILE[b.key] === undefined);
  assert.ok(files.length >= 10, `found ${files.length} examples`);
  // Three at a time: each is a Node start.
  const results: { code: number; out: string }[] = [];
  for (let i = 0; i < files.length; i += 3)
    results.push(...(await Promise.all(files.slice(i, i + 3).map((b, j) => check(b, i + j)))));
  const wrong = files.flatMap((b, i) => {
    const { code, out } = results[i] as { code: number; out: string };
    const lines = out.trimEnd().split('\n');
    if (code === 0 && lines.length === 1 && / ok$/.test(lines[0] as string)) return [];
    if (code === 2 && lines.every((l) => EXAMPLE_FILE.test(l))) return [];
    return [`${b.key}\n  exit ${code}: ${out.trimEnd().replaceAll('\n', '\n  ')}`];
  });
  assert.deepEqual(wrong, [], `examples --check refuses or warns about:\n${wrong.join('\n')}`);
});
