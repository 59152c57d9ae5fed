/**
 * `oxy --generate` documents every key of the config, the endpoint names (`main:`) included,
 * and opens with the yaml-language-server line naming the schema `oxy --schema` prints.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { uncommentedYamlKeys } from 'foundations/settings';

const bin = new URL('../bin/oxy', import.meta.url).pathname;
const run = promisify(execFile);

test('every key of oxy --generate has a comment above it; --schema describes the same keys', async () => {
  const [gen, schema] = await Promise.all([run(bin, ['--generate', '-']), run(bin, ['--schema'])]);
  const yaml = gen.stdout;
  assert.equal(yaml.split('\n')[0], '# yaml-language-server: $schema=oxy.schema.json');
  assert.deepEqual(uncommentedYamlKeys(yaml), []);
  assert.match(yaml, /\n {2}# "main": .+\n {2}main:\n/);
  const json = JSON.parse(schema.stdout);
  assert.equal(json.title, 'oxy 0.1.0 settings');
  // Every top-level section of the YAML is a property of the schema, and the other way round.
  const sections = [...yaml.matchAll(/^([a-z_]+):/gm)].map((m) => m[1]);
  assert.deepEqual(sections.sort(), Object.keys(json.properties).sort());
  assert.ok(json.properties.endpoints.additionalProperties, 'endpoints are a map of named entries');
});
