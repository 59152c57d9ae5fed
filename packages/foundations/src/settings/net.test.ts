import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatListenAddr,
  formatSocketAddr,
  parseCidr,
  parseListenAddr,
  parseSocketAddr,
  parseTargetAddr,
} from './net.ts';

test('parseSocketAddr: IPv4, bracketed IPv6 (normalised), host names, port bounds', () => {
  assert.deepEqual(parseSocketAddr('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseSocketAddr('[2001:DB8:0::1]:443'), { host: '2001:db8::1', port: 443 });
  assert.deepEqual(parseSocketAddr('[::]:0'), { host: '::', port: 0 });
  assert.deepEqual(parseSocketAddr('collector.internal:4318'), { host: 'collector.internal', port: 4318 });
  assert.deepEqual(parseSocketAddr('localhost:65535'), { host: 'localhost', port: 65535 });
});

test('parseSocketAddr refuses malformed input with a reason', () => {
  const cases: [string, RegExp][] = [
    ['127.0.0.1', /missing ":port"/],
    ['127.0.0.1:65536', /0 to 65535/],
    ['127.0.0.1:-1', /0 to 65535/],
    ['127.0.0.1:http', /0 to 65535/],
    ['127.0.0.1:', /0 to 65535/],
    [':80', /missing host/],
    ['::1:80', /needs brackets/],
    ['[::1:80', /"\]:port"/],
    ['[1.2.3.4]:80', /not an IPv6/],
    ['[fe80::1%eth0]:80', /zone \(%…\) is not supported/],
    ['999.1.1.1:80', /not an IPv4 address or host name/],
    ['bad host:80', /not an IPv4 address or host name/],
    ['-a:80', /not an IPv4 address or host name/],
  ];
  for (const [text, reason] of cases) {
    const r = parseSocketAddr(text);
    assert.ok('error' in r, text);
    assert.match(r.error, reason, text);
  }
});

test('parseListenAddr: tcp or absolute unix path', () => {
  assert.deepEqual(parseListenAddr('0.0.0.0:80'), { kind: 'tcp', host: '0.0.0.0', port: 80 });
  assert.deepEqual(parseListenAddr('[::1]:80'), { kind: 'tcp', host: '::1', port: 80 });
  assert.deepEqual(parseListenAddr('/run/app.sock'), { kind: 'unix', path: '/run/app.sock' });
  for (const bad of ['run/app.sock', './app.sock', 'app']) assert.ok('error' in parseListenAddr(bad), bad);
});

test('formatSocketAddr and formatListenAddr round-trip', () => {
  for (const text of ['127.0.0.1:80', '[::1]:443', 'example.com:8080']) {
    const addr = parseSocketAddr(text);
    assert.ok(!('error' in addr));
    assert.equal(formatSocketAddr(addr), text);
  }
  assert.equal(formatListenAddr({ kind: 'unix', path: '/tmp/s' }), '/tmp/s');
});

test('parseCidr normalises and refuses host bits, bad prefixes and non-addresses', () => {
  assert.equal(parseCidr('10.0.0.0/8'), '10.0.0.0/8');
  assert.equal(parseCidr('127.0.0.1'), '127.0.0.1/32');
  assert.equal(parseCidr('0.0.0.0/0'), '0.0.0.0/0');
  assert.equal(parseCidr('FC00::/7'), 'fc00::/7');
  assert.equal(parseCidr('2001:db8:0:0::/32'), '2001:db8::/32');
  assert.equal(parseCidr('::1'), '::1/128');
  assert.equal(parseCidr('::ffff:10.0.0.0/104'), '::ffff:10.0.0.0/104');
  const bad: [string, RegExp][] = [
    ['10.0.0.1/8', /did you mean "10.0.0.0\/8"/],
    ['fc00::1/7', /did you mean "fc00::\/7"/],
    ['10.0.0.0/33', /0 to 32/],
    ['::/129', /0 to 128/],
    ['10.0.0.0/', /0 to 32/],
    ['10.0.0.0/x', /0 to 32/],
    ['10.0.0/8', /not an IP address/],
    ['example.com/8', /not an IP address/],
    ['', /not an IP address/],
  ];
  for (const [text, reason] of bad) {
    const r = parseCidr(text);
    assert.ok(typeof r === 'object', text);
    assert.match(r.error, reason, text);
  }
});

test('parseTargetAddr: port 0 names no service; a URL is named as one', () => {
  assert.deepEqual(parseTargetAddr('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
  assert.deepEqual(parseTargetAddr('127.0.0.1:0'), {
    error: 'port 0 cannot be connected to: use 1 to 65535',
  });
  assert.deepEqual(parseSocketAddr('127.0.0.1:0'), { host: '127.0.0.1', port: 0 }); // listening may ask for any port
  // Out of range: the range a target may use.
  assert.deepEqual(parseTargetAddr('127.0.0.1:70000'), {
    error: 'port must be a whole number from 1 to 65535',
  });
  assert.deepEqual(parseTargetAddr('http://example.com:80'), {
    error: 'a host:port, not a URL: drop the scheme',
  });
});
