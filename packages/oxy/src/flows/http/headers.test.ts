/** Target parsing and hop-by-hop removal, including malformed targets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  filterRawHeaders,
  keepsContentLength,
  parseAbsoluteTarget,
  parseAuthority,
  rawToHeaders,
  serializeRawHeaders,
  stripHopByHop,
} from './headers.ts';

test('authority-form targets', () => {
  assert.deepEqual(parseAuthority('example.com:443'), { host: 'example.com', port: 443 });
  assert.deepEqual(parseAuthority('[2001:db8::1]:8443'), { host: '2001:db8::1', port: 8443 });
  assert.deepEqual(parseAuthority('Example.COM', 80), { host: 'example.com', port: 80 });
  for (const bad of [
    'example.com',
    ':443',
    'a:0',
    'a:65536',
    'a:x',
    'u@a:1',
    '[::1',
    '[nope]:1',
    '::1:80',
    'a b:1',
    '',
  ]) {
    assert.equal(parseAuthority(bad), null, bad);
  }
});

test('absolute-form targets', () => {
  assert.deepEqual(parseAbsoluteTarget('http://a.example:8080/p?q=1#frag'), {
    scheme: 'http',
    authority: 'a.example:8080',
    addr: { host: 'a.example', port: 8080 },
    path: '/p?q=1',
  });
  assert.equal(parseAbsoluteTarget('http://a.example')?.path, '/');
  assert.equal(parseAbsoluteTarget('http://a.example?x')?.path, '/?x');
  assert.equal(parseAbsoluteTarget('http://[::1]:81/')?.addr.host, '::1');
  for (const bad of ['/relative', 'ftp://a/', 'http://', 'http://u:p@a/', 'http://a:99999/', 'x']) {
    assert.equal(parseAbsoluteTarget(bad), null, bad);
  }
});

test('hop-by-hop fields and those Connection names are removed, others kept in order', () => {
  const raw = [
    'Host',
    'a',
    'Connection',
    'keep-alive, X-Secret',
    'X-Secret',
    '1',
    'Proxy-Authorization',
    'Basic x',
    'Keep-Alive',
    'timeout=5',
    'Accept',
    '*/*',
    'TE',
    'trailers',
    'Upgrade',
    'websocket',
    'X-B',
    '2',
  ];
  assert.deepEqual(filterRawHeaders(raw, 'host'), ['Accept', '*/*', 'X-B', '2']);
  // The lean path's one-string form keeps exactly the same fields, in order.
  assert.equal(serializeRawHeaders(raw, 'host'), 'Accept: */*\r\nX-B: 2\r\n');
  assert.equal(serializeRawHeaders(['Connection', 'content-length', 'Content-Length', '5'], ''), '');
  assert.deepEqual(filterRawHeaders(['Connection', 'Upgrade', 'Upgrade', 'websocket'], '', true), [
    'Connection',
    'Upgrade',
    'Upgrade',
    'websocket',
  ]);
  const h = { connection: 'x-a', 'x-a': '1', 'proxy-authorization': 'p', accept: 'b' };
  stripHopByHop(h);
  assert.deepEqual(h, { accept: 'b' });
});

test('Connection values: single tokens, lists, several fields, and keepsContentLength agrees with the serialised lines', () => {
  // One token, in any case and spacing; close and keep-alive name no field.
  assert.equal(serializeRawHeaders(['Connection', ' X-A ', 'X-A', '1', 'X-B', '2'], ''), 'X-B: 2\r\n');
  assert.equal(serializeRawHeaders(['Connection', 'Keep-Alive', 'X-A', '1'], ''), 'X-A: 1\r\n');
  assert.equal(serializeRawHeaders(['Connection', 'close', 'X-A', '1'], ''), 'X-A: 1\r\n');
  assert.equal(serializeRawHeaders(['Connection', '', 'X-A', '1'], ''), 'X-A: 1\r\n');
  // Tokens from several Connection fields add up; a list with empty members.
  const raw = ['Connection', 'x-a', 'X-A', '1', 'Connection', 'close,, X-B', 'X-B', '2', 'X-C', '3'];
  assert.equal(serializeRawHeaders(raw, ''), 'X-C: 3\r\n');
  assert.deepEqual(filterRawHeaders(raw, ''), ['X-C', '3']);
  const h = { connection: ['x-a', 'keep-alive, X-B'], 'x-a': '1', 'x-b': '2', 'x-c': '3' };
  stripHopByHop(h);
  assert.deepEqual(h, { 'x-c': '3' });
  // keepsContentLength: true exactly when the serialised lines (no skip) carry a length.
  const cases: string[][] = [
    ['Content-Length', '5'],
    ['content-LENGTH', '0', 'X', 'y'],
    ['Connection', 'content-length', 'Content-Length', '5'],
    ['Connection', 'keep-alive, Content-Length', 'Content-Length', '5'],
    ['Connection', 'keep-alive', 'Content-Length', '5'],
    ['X-Content-Length', '5'],
    ['Transfer-Encoding', 'chunked'],
    [],
  ];
  for (const c of cases)
    assert.equal(
      keepsContentLength(c),
      /(?:^|\n)content-length:/i.test(serializeRawHeaders(c, '')),
      c.join(),
    );
  assert.equal(keepsContentLength(['Content-Length', '5']), true);
  assert.equal(keepsContentLength(['Connection', 'content-length', 'Content-Length', '5']), false);
});

test('raw headers become the header object node:http would build', () => {
  const raw = [
    'Host',
    'a',
    'host',
    'b',
    'Set-Cookie',
    'x=1',
    'set-cookie',
    'y=2',
    'Cookie',
    'c=1',
    'cookie',
    'd=2',
  ];
  assert.deepEqual(rawToHeaders([...raw, 'X-A', '1', 'x-a', '2']), {
    host: 'a',
    'set-cookie': ['x=1', 'y=2'],
    cookie: 'c=1; d=2',
    'x-a': '1, 2',
  });
  assert.deepEqual(rawToHeaders([]), {});
});
