/**
 * Runs every TypeScript snippet in docs/foundations.md, so the documentation stays true. Each
 * snippet runs in its own process; package imports are resolved from here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const DOC = fileURLToPath(new URL('../../../../docs/foundations.md', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fnd-docs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const snippets = [...readFileSync(DOC, 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);

test('the page has snippets', () => assert.ok(snippets.length >= 6));

for (const [i, code] of snippets.entries()) {
  const first = code.split('\n').find((l) => !l.startsWith('import') && l.trim() !== '') ?? '';
  test(`docs/foundations.md snippet ${i + 1}: ${first.slice(0, 60)}`, async () => {
    const resolved = code.replace(/from '([^'.][^']*)'/g, (all, spec: string) =>
      spec.startsWith('node:') ? all : `from '${import.meta.resolve(spec)}'`,
    );
    const file = join(dir, `snippet-${i + 1}.mts`);
    writeFileSync(file, resolved);
    await promisify(execFile)(process.execPath, [file], { cwd: dir, timeout: 30_000 });
  });
}
