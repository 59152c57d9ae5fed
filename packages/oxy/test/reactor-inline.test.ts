/**
 * The addon's reactor driven inline (`OXY_REACTOR=inline`: the JS loop polls its epoll set, no
 * reactor thread): the tests of what the reactor carries, splices, writes, UDP, CONNECT tunnels
 * and `tcp` endpoints, run again in that mode, each file in a child `node --test` of its own.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runTestFiles } from './fixtures/child-tests.ts';

const FILES = [
  'packages/native/test/splice.test.ts',
  'packages/native/test/splice-worker.test.ts',
  'packages/native/test/writer.test.ts',
  'packages/native/test/udp.test.ts',
  'packages/oxy/test/connect.test.ts',
  'packages/oxy/test/reactor-connect.test.ts',
  'packages/oxy/test/tcp-reactor-accept.test.ts',
  'packages/oxy/test/splice-tunnel.test.ts',
];

test('the reactor run inline passes the tests of what it carries', { timeout: 240_000 }, async () => {
  const { code, out } = await runTestFiles(FILES, { OXY_REACTOR: 'inline' });
  assert.equal(code, 0, `OXY_REACTOR=inline: ${out}`);
});
