import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const root = path.join(import.meta.dirname, '..');

test('docs/testing.md shows the example test verbatim', () => {
  const doc = fs.readFileSync(path.join(root, 'docs/testing.md'), 'utf8');
  const example = fs.readFileSync(path.join(root, 'test/testing-example.test.ts'), 'utf8');
  assert.ok(
    doc.includes(`\`\`\`ts\n${example.trimEnd()}\n\`\`\``),
    'docs/testing.md is out of date with test/testing-example.test.ts',
  );
  assert.ok(example.split('\n').length < 40, 'the example app test stays under 40 lines');
});
