/**
 * docs/metrics.md lists every metric Oxy declares: the declarations (`defineMetrics('group', {
 * name: counter|gauge|histogram… })` in packages/oxy/src) are read from the source, and each
 * `oxy_<group>_<name>` must appear in the page.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname, '..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')
        ? [join(dir, e.name)]
        : [],
  );
}

/** `group_name` of every metric declared in `text`. */
function declared(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/defineMetrics\('([a-z_]+)', \{([\s\S]*?)\n\}\);/g)) {
    for (const d of (m[2] as string).matchAll(/^ {2}([a-z_]+): (?:counter|gauge|histogram)\b/gm))
      out.push(`${m[1]}_${d[1]}`);
  }
  return out;
}

test('every metric Oxy declares is listed in docs/metrics.md', () => {
  const page = readFileSync(join(root, 'docs/metrics.md'), 'utf8');
  const all = sources(join(root, 'packages/oxy/src')).flatMap((f) => declared(readFileSync(f, 'utf8')));
  assert.ok(all.length > 50, `found ${all.length} declarations: the pattern no longer matches the source`);
  const missing = all.filter((k) => !new RegExp(`\`oxy_${k}[\`{]`).test(page));
  assert.deepEqual(missing, [], 'declared but not in docs/metrics.md');
});
