/**
 * The native HTTP/1.1 engine with spinning on (`OXY_SPIN_US=50`: after a loop turn with engine
 * events, the loop's epoll set is polled for up to 50 µs before the loop may sleep): the
 * engine's own tests, run again in a child `node --test` with it set.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runTestFiles } from './fixtures/child-tests.ts';

test('the native engine spinning before the loop sleeps passes its tests', { timeout: 180_000 }, async () => {
  const { code, out } = await runTestFiles(['packages/oxy/test/native-h1.test.ts'], { OXY_SPIN_US: '50' });
  assert.equal(code, 0, `OXY_SPIN_US=50: ${out}`);
});
