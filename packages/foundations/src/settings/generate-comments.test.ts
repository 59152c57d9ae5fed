/**
 * Every key of a generated config has a comment above it: section keys, leaves, map entries
 * (named by the user, e.g. an endpoint's `main:`) and the keys inside list items.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import YAML from 'yaml';
import { generateYaml, uncommentedYamlKeys as uncommentedKeys } from './generate.ts';
import { s } from './schema.ts';

const Item = s.object('A rule.', {
  host: s.str('Host the rule matches.', 'example.com'),
  allow: s.bool('Allow or refuse the host.', true),
});
const Settings = s.object('Test settings.', {
  name: s.str('The name.', 'x'),
  servers: s.map('Servers by name.', s.object('A server.', { addr: s.str('Address.', 'a:1') }), {
    main: { addr: '127.0.0.1:1' },
    'with space': { addr: '127.0.0.1:2' },
  }),
  rules: s.list('Rules in order.', Item, [
    { host: 'a.example', allow: true },
    { host: 'b.example', allow: false },
  ]),
  plain: s.list('Plain strings.', s.str('One string.', ''), ['a:b', 'c']),
});

test('every key, map entries and list-item keys included, has a comment above it', () => {
  const yaml = generateYaml(Settings, { header: 'test' });
  assert.deepEqual(uncommentedKeys(yaml), [], yaml);
  assert.match(yaml, /# "main": A server\.\n {2}main:/);
  assert.deepEqual(YAML.parse(yaml).servers.main, { addr: '127.0.0.1:1' }, 'comments do not change values');
});

test('the checker itself finds a key without a comment', () => {
  assert.deepEqual(
    uncommentedKeys('# a\na: 1\nb: 2\nc:\n  # d\n  d: 1\n  e: "x:y"\n- f: 1\n- # g\n  g: 1\n'),
    ['line 3: b: 2', 'line 4: c:', 'line 7: e: "x:y"', 'line 8: - f: 1'],
  );
});
