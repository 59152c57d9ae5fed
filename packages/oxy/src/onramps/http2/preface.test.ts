import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyPreface, HTTP2_PREFACE } from './preface.ts';

test('classifyPreface: whole preface, proper prefix, first differing byte', () => {
  assert.equal(classifyPreface(HTTP2_PREFACE), 'h2');
  assert.equal(classifyPreface(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4])])), 'h2');
  assert.equal(classifyPreface(HTTP2_PREFACE.subarray(0, 10)), undefined);
  assert.equal(classifyPreface(Buffer.alloc(0)), undefined);
  assert.equal(classifyPreface(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
  assert.equal(classifyPreface(Buffer.from('PRI * HTTP/1.1\r\n')), 'http1');
  assert.equal(classifyPreface(Buffer.from('P')), undefined);
  assert.equal(classifyPreface(Buffer.from([0x16, 3, 1])), 'http1'); // a TLS ClientHello
});
