/**
 * Napping (packages/native/src/nap.h: a thread busy with many exchanges at once sleeps
 * `OXY_NAP_US` on a timer when a turn leaves nothing ready, instead of waiting in epoll) forced
 * after every turn with events (`OXY_NAP_ALWAYS=1`, even with more ready): the tests of the
 * loops that nap, the native HTTP/1.1 engine's, the reactor thread's and the reactor driven
 * inline on the JS loop, run again in a child `node --test` with it set, so that a nap never
 * loses an event, a command or a timeout.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REACTOR_TEST_FILES, runTestFiles } from './fixtures/child-tests.ts';

const ENV = { OXY_NAP_ALWAYS: '1', OXY_NAP_US: '200' };

test('the native engine napping after every turn passes its tests', { timeout: 180_000 }, async () => {
  const files = ['packages/oxy/test/native-h1.test.ts', 'packages/oxy/test/early-response.test.ts'];
  const { code, out } = await runTestFiles(files, ENV);
  assert.equal(code, 0, `OXY_NAP_ALWAYS=1: ${out}`);
});

test('the reactor thread napping after every turn passes the tests of what it carries', {
  timeout: 240_000,
}, async () => {
  const { code, out } = await runTestFiles(REACTOR_TEST_FILES, ENV);
  assert.equal(code, 0, `OXY_NAP_ALWAYS=1: ${out}`);
});

test('the reactor driven inline, napping after every turn, passes the same tests', {
  timeout: 240_000,
}, async () => {
  const { code, out } = await runTestFiles(REACTOR_TEST_FILES, { ...ENV, OXY_REACTOR: 'inline' });
  assert.equal(code, 0, `OXY_REACTOR=inline OXY_NAP_ALWAYS=1: ${out}`);
});
