/**
 * The native HTTP/1.1 engine napping after every loop turn with events (`OXY_NAP_ALWAYS=1`:
 * a timer sleep of `OXY_NAP_US` before the loop polls, which by default it takes only when busy
 * with many requests at once, packages/native/src/h1-loop.c): the engine's own tests, run again
 * in a child `node --test` with it set, so that a nap never loses an event or a timeout.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runTestFiles } from './fixtures/child-tests.ts';

test('the native engine napping after every turn passes its tests', { timeout: 180_000 }, async () => {
  const env = { OXY_NAP_ALWAYS: '1', OXY_NAP_US: '200' };
  const { code, out } = await runTestFiles(
    ['packages/oxy/test/native-h1.test.ts', 'packages/oxy/test/early-response.test.ts'],
    env,
  );
  assert.equal(code, 0, `OXY_NAP_ALWAYS=1: ${out}`);
});
