/**
 * The addon's reactor driven inline (`OXY_REACTOR=inline`: the JS loop polls its epoll set, no
 * reactor thread): the tests of what the reactor carries, splices, writes, UDP, CONNECT tunnels
 * and `tcp` endpoints, run again in that mode, each file in a child `node --test` of its own.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REACTOR_TEST_FILES, runTestFiles } from './fixtures/child-tests.ts';

test('the reactor run inline passes the tests of what it carries', { timeout: 240_000 }, async () => {
  const { code, out } = await runTestFiles(REACTOR_TEST_FILES, { OXY_REACTOR: 'inline' });
  assert.equal(code, 0, `OXY_REACTOR=inline: ${out}`);
});
