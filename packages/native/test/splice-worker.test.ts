/**
 * Splices in worker threads: each JS thread has its own reactor and pipe pool. A worker that
 * ended (one splice done, one still running) leaves no pipe behind (its pool is closed by the
 * env's cleanup hook) and does not take the process down.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { countFds } from './fixtures/open-fds.ts';

const pipes = (): number => countFds('pipe');

test('a worker thread splices, pools pipes and ends: its pipes are closed, the process goes on', async () => {
  const before = pipes();
  for (let i = 0; i < 3; i++) {
    const w = new Worker(new URL('./fixtures/splice-worker.ts', import.meta.url));
    const [msg] = (await Promise.race([
      new Promise((r) => w.once('message', (m) => r([m]))),
      new Promise((_, rej) => w.once('error', rej)),
    ])) as [string];
    assert.equal(msg, 'undefined 2 4');
    await w.terminate();
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(pipes() <= before + 2, `pipes: ${before} before, ${pipes()} after`);
});
