/** The error catalogue: brand across copies, wrapping of thrown values, HTTP status mapping. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hookFailed, httpStatusFor, isOxyError, OXY_ERR, OxyError, toOxyError } from './errors.ts';

test('isOxyError recognises the brand, not the class identity', () => {
  assert.ok(isOxyError(new OxyError(OXY_ERR.BLOCKED, 'x')));
  assert.ok(isOxyError({ [Symbol.for('oxy.error')]: true, code: 'OXY_ERR_X' }));
  assert.ok(!isOxyError(new Error('x')));
  assert.ok(!isOxyError(null));
});

test('a thrown non-Error becomes an OxyError with a message and a cause', () => {
  const e = hookFailed('EgressHook.handleConnection', 'just a string');
  assert.equal(e.code, OXY_ERR.HOOK_FAILED);
  assert.match(e.message, /EgressHook\.handleConnection failed: non-Error thrown: just a string/);
  assert.ok(e.cause instanceof Error);
  assert.equal(hookFailed('x', e), e, 'not wrapped twice');
  assert.equal(toOxyError(new Error('boom'), OXY_ERR.UPSTREAM_FAILED, 'upstream').source, 'upstream');
});

test('statuses: blocks 403, timeouts 504, request hooks 500, egress hooks and the rest 502', () => {
  assert.equal(httpStatusFor(new OxyError(OXY_ERR.EGRESS_BLOCKED, 'x')), 403);
  assert.equal(httpStatusFor(new OxyError(OXY_ERR.BLOCKED, 'x', { status: 451 })), 451);
  assert.equal(httpStatusFor(new OxyError(OXY_ERR.CONNECT_TIMEOUT, 'x')), 504);
  assert.equal(httpStatusFor(new OxyError(OXY_ERR.CONNECT_REFUSED, 'x')), 502);
  assert.equal(httpStatusFor(hookFailed('HttpRequestHook.handleRequest', new Error('x'))), 500);
  assert.equal(httpStatusFor(hookFailed('EgressHook.handleUpstreamIps', new Error('x'))), 502);
  assert.equal(httpStatusFor(new Error('plain')), 502);
});
