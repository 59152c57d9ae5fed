import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyRequest, http2ResponseHeaders, parseConnectAuthority, regularHeaders } from './headers.ts';

test('parseConnectAuthority: host:port, IPv4, bracketed IPv6, names lower-cased', () => {
  assert.deepEqual(parseConnectAuthority('Example.COM:443'), { host: 'example.com', port: 443 });
  assert.deepEqual(parseConnectAuthority('192.0.2.1:80'), { host: '192.0.2.1', port: 80 });
  assert.deepEqual(parseConnectAuthority('[2001:db8::1]:8443'), { host: '2001:db8::1', port: 8443 });
  assert.deepEqual(parseConnectAuthority('a-b_c.example.:1'), { host: 'a-b_c.example.', port: 1 });
  assert.deepEqual(parseConnectAuthority('h:65535'), { host: 'h', port: 65535 });
});

test('parseConnectAuthority: malformed authorities say why', () => {
  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['x'.repeat(300), /too long/],
    ['example.com', /host:port/],
    [':443', /host:port/],
    ['example.com:', /port must be a number/],
    ['example.com:0', /1 to 65535/],
    ['example.com:65536', /1 to 65535/],
    ['example.com:123456', /port must be a number/],
    ['example.com:+80', /port must be a number/],
    ['u@example.com:443', /invalid host/],
    ['exa mple.com:80', /invalid host/],
    ['example.com/x:80', /invalid host/],
    ['-leading.example:80', /invalid host/],
    ['::1:443', /IPv6 address needs brackets/],
    ['[::1]443', /\[v6\]:port/],
    ['[::1:443', /\[v6\]:port/],
    ['[example.com]:443', /invalid IPv6/],
    ['[]:443', /invalid IPv6/],
  ];
  for (const [authority, why] of bad) {
    const r = parseConnectAuthority(authority);
    assert.ok('error' in r, `${JSON.stringify(authority)} should be refused`);
    assert.match(r.error, why, JSON.stringify(authority));
  }
});

test('classifyRequest: CONNECT, extended CONNECT, forwarded requests', () => {
  const c = classifyRequest({ ':method': 'CONNECT', ':authority': 'example.com:443', 'x-a': '1' });
  assert.equal(c.kind, 'connect');
  assert.ok(c.kind === 'connect' && c.host === 'example.com' && c.port === 443);
  assert.deepEqual(c.kind === 'connect' && c.head.headers, { 'x-a': '1' });

  const x = classifyRequest({
    ':method': 'CONNECT',
    ':protocol': 'connect-udp',
    ':scheme': 'https',
    ':authority': 'proxy',
    ':path': '/.well-known/masque/udp/h/443/',
  });
  assert.ok(x.kind === 'extended-connect' && x.protocol === 'connect-udp');

  const g = classifyRequest({ ':method': 'GET', ':scheme': 'http', ':authority': 'h:8080', ':path': '/a?b' });
  assert.equal(g.kind, 'request');
  assert.deepEqual(g.kind === 'request' && g.head, {
    method: 'GET',
    scheme: 'http',
    authority: 'h:8080',
    path: '/a?b',
    headers: {},
  });
  assert.equal(
    classifyRequest({ ':method': 'OPTIONS', ':scheme': 'http', ':authority': 'h', ':path': '*' }).kind,
    'request',
  );
});

test('classifyRequest: malformed requests are 400 with a reason', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ ':method': 'CONNECT', ':authority': 'h' }, /bad :authority/],
    [{ ':method': 'CONNECT', ':authority': 'h:1', ':path': '/' }, /must not carry/],
    [{ ':method': 'GET', ':scheme': 'http', ':path': '/' }, /missing :authority/],
    [{ ':method': 'GET', ':scheme': 'ftp', ':authority': 'h', ':path': '/' }, /unsupported :scheme/],
    [{ ':method': 'GET', ':scheme': 'http', ':authority': 'h', ':path': 'relative' }, /bad :path/],
    [{ ':method': 'GET', ':scheme': 'http', ':authority': 'h', ':path': '*' }, /bad :path/],
  ];
  for (const [headers, why] of cases) {
    const r = classifyRequest(headers);
    assert.ok(r.kind === 'invalid' && r.status === 400, JSON.stringify(headers));
    assert.match(r.kind === 'invalid' ? r.reason : '', why);
  }
});

test('regularHeaders drops pseudo-header and connection-specific fields', () => {
  assert.deepEqual(
    regularHeaders({ ':path': '/', te: 'trailers', 'keep-alive': '1', cookie: 'a=1; b=2', accept: '*/*' }),
    { cookie: 'a=1; b=2', accept: '*/*' },
  );
});

test('http2ResponseHeaders drops connection-specific fields and those Connection names', () => {
  assert.deepEqual(
    http2ResponseHeaders({
      Connection: 'keep-alive, X-Private',
      connection: 'close, x-other',
      'Keep-Alive': 'timeout=5',
      'Transfer-Encoding': 'chunked',
      'X-Private': 'secret',
      'x-other': 'o',
      Upgrade: 'h2c',
      'Set-Cookie': ['a=1', 'b=2'],
      'Content-Type': 'text/plain',
      absent: undefined,
    }),
    { 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain' },
  );
});
