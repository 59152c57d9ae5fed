/**
 * The first-bytes classifier of inspected tunnels: TLS records, HTTP/1.x request lines (whole or
 * cut after the method), and everything else, including random bytes (never a throw).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { classifyFirstBytes } from './inspect.ts';

test('a TLS handshake record is tls', () => {
  assert.equal(classifyFirstBytes(Buffer.from([0x16, 3, 1, 0, 5])), 'tls');
  assert.equal(classifyFirstBytes(Buffer.from([0x16])), 'tls');
});

test('HTTP/1.x request lines are http, also cut after the method', () => {
  for (const line of [
    'GET / HTTP/1.1\r\n',
    'POST /x HTTP/1.0\r\n',
    'OPTIONS * HTTP/1.1\r\n',
    'PROPFIND /',
    'GE',
    'GET',
  ])
    assert.equal(classifyFirstBytes(Buffer.from(line)), 'http', line);
});

test('other bytes are other', () => {
  for (const bytes of [
    'get / HTTP/1.1',
    'GE /',
    ' GET /',
    'SSH-2.0-OpenSSH_9.2',
    '\x00\x01',
    'ABCDEFGHIJKLMNOPQRSTUVWXYZ /',
  ])
    assert.equal(classifyFirstBytes(Buffer.from(bytes, 'latin1')), 'other', JSON.stringify(bytes));
  assert.equal(classifyFirstBytes(Buffer.alloc(0)), 'other');
});

test('random input never throws and always answers one of the three kinds', () => {
  const end = Date.now() + 200;
  while (Date.now() < end) {
    const kind = classifyFirstBytes(randomBytes(Math.floor(Math.random() * 64)));
    assert.ok(kind === 'tls' || kind === 'http' || kind === 'other');
  }
});
