/**
 * The addon's reactor driven inline (`OXY_REACTOR=inline`: the JS loop polls its epoll set, no
 * reactor thread): the tests of what the reactor carries, splices, writes, UDP, CONNECT tunnels
 * and `tcp` endpoints, run again in that mode, each file in a child `node --test` of its own.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));
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
  const child = spawn(process.execPath, ['--test', '--test-reporter=dot', ...FILES], {
    cwd: root,
    env: { ...withoutTestContext(), OXY_REACTOR: 'inline' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, `OXY_REACTOR=inline: ${out.slice(-4000)}`);
});

/** This process's environment without the runner's marker (a child `node --test` that inherits
 * it reports to this runner instead of running its files). */
function withoutTestContext(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}
