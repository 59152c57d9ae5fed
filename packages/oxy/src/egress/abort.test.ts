import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OXY_ERR } from '../errors.ts';
import { untilAborted } from './abort.ts';

test('untilAborted: the work settles first, as it would alone', async () => {
  const c = new AbortController();
  assert.equal(await untilAborted(Promise.resolve(7), c.signal), 7);
  await assert.rejects(untilAborted(Promise.reject(new Error('refused')), c.signal), /refused/);
  c.abort(); // after the work settled: nothing happens
});

test('untilAborted: an abort rejects at once, and a late value goes to `late`', async () => {
  const c = new AbortController();
  const work = Promise.withResolvers<string>();
  const late: string[] = [];
  const waiting = untilAborted(work.promise, c.signal, (v) => late.push(v));
  c.abort();
  await assert.rejects(waiting, (e: { code?: string }) => e.code === OXY_ERR.ABORTED);
  work.resolve('socket');
  await work.promise;
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(late, ['socket']);
});

test('untilAborted: already aborted rejects, and a late rejection is dropped (no unhandled rejection)', async () => {
  const c = new AbortController();
  c.abort();
  const work = Promise.withResolvers<string>();
  let unhandled = 0;
  const count = (): void => {
    unhandled++;
  };
  process.on('unhandledRejection', count);
  try {
    await assert.rejects(
      untilAborted(work.promise, c.signal),
      (e: { code?: string }) => e.code === OXY_ERR.ABORTED,
    );
    work.reject(new Error('late failure'));
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(unhandled, 0);
  } finally {
    process.off('unhandledRejection', count);
  }
});
