/** `interception.hosts` patterns: exact names, IP literals, `*.domain`, case and trailing dots. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { compileHostPatterns } from './hosts.ts';

test('exact names, wildcards and IPs, case-insensitive, trailing dot ignored', () => {
  const m = compileHostPatterns([
    'Example.com',
    '*.corp.example',
    '10.0.0.1',
    '[2001:db8::1]',
    'trailing.test.',
  ]);
  assert.equal(m.all, false);
  const yes = [
    'example.com',
    'EXAMPLE.COM.',
    'a.corp.example',
    'a.b.CORP.example.',
    '10.0.0.1',
    '2001:db8:0::1',
    '[2001:db8::1]',
    'trailing.test',
  ];
  const no = [
    'www.example.com',
    'corp.example',
    'xcorp.example',
    'a.corp.example.evil',
    '10.0.0.2',
    '2001:db8::2',
    'example.co',
    '',
  ];
  for (const h of yes) assert.ok(m.matches(h), h);
  for (const h of no) assert.ok(!m.matches(h), h);
});

test('an empty list matches every host', () => {
  const m = compileHostPatterns([]);
  assert.ok(m.all && m.matches('anything.example') && m.matches('192.0.2.1'));
});

test('malformed patterns are errors naming their index', () => {
  for (const bad of ['*', '*.', 'a*.example.com', 'exa mple.com', '*.*.example', 'foo/bar', '']) {
    assert.throws(
      () => compileHostPatterns(['ok.example', bad]),
      (e: unknown) => isOxyError(e) && e.message.startsWith('interception.hosts[1]: '),
      JSON.stringify(bad),
    );
  }
});
