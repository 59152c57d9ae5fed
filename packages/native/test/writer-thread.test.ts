/**
 * The socket writer driven by a reactor thread of its own (`OXY_REACTOR=thread`): what only a
 * second thread can do, write while the JS thread is busy, and the race that comes with it. The
 * inline reactor (the default) is covered by writer.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync, readSync } from 'node:fs';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SocketWriter } from 'native';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

// Read when the first reactor is made (the first writer), after this line.
process.env.OXY_REACTOR = 'thread';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

test('a drain asked for again before the last one was delivered waits for the bytes queued since', async () => {
  // The reactor thread posts a drain once the queue empties; if the JS thread meanwhile queued
  // more and asked again, that post must not answer the new question (it did: the callback came
  // with megabytes still queued, so a caller's held writes, or a hand-over, went early).
  const { outer, inner } = await pair();
  outer.pause();
  const w = new SocketWriter(fdOf(inner));
  try {
    await askedAgain(w, outer);
  } finally {
    w.close();
    inner.destroy();
    outer.destroy();
  }
});

async function askedAgain(w: SocketWriter, outer: net.Socket): Promise<void> {
  const chunk = Buffer.alloc(16 * 2 ** 20, 7);
  w.send(chunk); // more than the socket takes while nobody reads
  assert.equal(
    w.drained(() => {}), // replaced by the second callback before it is due
    false,
  );
  // Read behind Node's back, this thread never yielding: the reactor thread writes the rest and
  // posts the drain, which waits for this turn to end.
  const sink = Buffer.alloc(1 << 20);
  const deadline = Date.now() + 8000;
  while (w.written < chunk.length) {
    assert.ok(Date.now() < deadline, `the reactor thread wrote ${w.written} of ${chunk.length}`);
    try {
      readSync(fdOf(outer), sink);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
  // More than the socket's buffers can ever take (the receive buffer grew while we read): most
  // of it stays queued behind a socket nobody reads until this turn ends.
  const more = Buffer.alloc(kernelMax('tcp_rmem') + kernelMax('tcp_wmem') + chunk.length, 8);
  w.send(more);
  let writtenAtDrain = -1;
  const drained = new Promise<void>((resolve) => {
    const done = (): void => {
      writtenAtDrain = w.written;
      resolve();
    };
    if (w.drained(done)) done();
  });
  const total = chunk.length + more.length;
  assert.ok(w.written < total, 'still queued when the turn ends');
  await nextTurn(); // the stale post is delivered here
  await nextTurn();
  outer.resume();
  outer.on('data', () => {});
  await drained;
  assert.equal(writtenAtDrain, total, 'the callback came once everything was written');
}

/** The most a TCP socket's buffer may grow to (`tcp_rmem` or `tcp_wmem`: min, default, max). */
function kernelMax(name: 'tcp_rmem' | 'tcp_wmem'): number {
  return Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'latin1').trim().split(/\s+/)[2]);
}
