/** docs/configuration.md is generated from the settings schema; this fails when it is stale. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { configurationMarkdown } from '../src/config-docs.ts';

test('docs/configuration.md is up to date (regenerate: npx node scripts/gen-config-docs.ts)', () => {
  const file = new URL('../../../docs/configuration.md', import.meta.url);
  assert.equal(fs.readFileSync(file, 'utf8'), configurationMarkdown());
});
