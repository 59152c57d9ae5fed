/**
 * The native HTTP/1.1 engine with spinning on (`OXY_SPIN_US=50`: after a loop turn with engine
 * events, the loop's epoll set is polled for up to 50 µs before the loop may sleep): the
 * engine's own tests, run again in a child `node --test` with it set.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));

test('the native engine spinning before the loop sleeps passes its tests', { timeout: 180_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, OXY_SPIN_US: '50' };
  delete env.NODE_TEST_CONTEXT; // a child `node --test` that inherits it reports here instead of running
  const child = spawn(
    process.execPath,
    ['--test', '--test-reporter=dot', 'packages/oxy/test/native-h1.test.ts'],
    {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, `OXY_SPIN_US=50: ${out.slice(-4000)}`);
});
