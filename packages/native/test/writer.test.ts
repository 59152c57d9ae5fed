/**
 * Writes from the reactor thread to real TCP connections on loopback: the inner end of a pair
 * (accepted with `pauseOnConnect`, so Node never touches it) is written through a
 * `SocketWriter`; the outer end reads what arrives.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, readSync } from 'node:fs';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { isNativeError, SocketWriter } from 'native';
import { countFds, epollEntries, socketInode } from './fixtures/open-fds.ts';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// A full collection on demand, for the test of an owner nobody else holds.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const sockets = (): number => countFds('socket');

test('buffers and strings (latin1, utf8) arrive whole and in order; end() follows the last byte', async () => {
  const { outer, inner } = await pair();
  const got = collect(outer);
  const w = new SocketWriter(fdOf(inner));
  const expected: Buffer[] = [];
  for (let i = 0; i < 300; i++) {
    if (i % 3 === 0) {
      const b = randomBytes(1 + ((i * 7919) % 70000));
      w.send(b);
      expected.push(b);
    } else if (i % 3 === 1) {
      const s = `HTTP/1.1 200 OK\r\nX-N: ${i}\r\n\u00e9\r\n`;
      w.send(s, 'latin1');
      expected.push(Buffer.from(s, 'latin1'));
    } else {
      const s = `tunnel ${i} \u2603 ✓`;
      w.send(s, 'utf8');
      expected.push(Buffer.from(s, 'utf8'));
    }
  }
  w.end();
  const all = Buffer.concat(expected);
  assert.equal(sha(await got), sha(all));
  assert.equal(w.written, all.length);
  w.close();
  inner.destroy();
  outer.destroy();
});

test('a peer that does not read: the queue holds, drained() says so, and the callback comes once it is written', async () => {
  const { outer, inner } = await pair();
  outer.pause();
  const w = new SocketWriter(fdOf(inner));
  const big = randomBytes(16 * 2 ** 20);
  const queued = w.send(big);
  assert.ok(queued > 0 && queued <= big.length);
  await new Promise((r) => setTimeout(r, 50));
  let drained = false;
  const empty = new Promise<void>((resolve) => {
    if (w.drained(() => resolve())) resolve();
  });
  void empty.then(() => {
    drained = true;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(drained, false, 'still queued while the peer reads nothing');
  const got = collect(outer);
  outer.resume();
  await empty;
  w.end();
  assert.equal(sha(await got), sha(big));
  w.close();
  inner.destroy();
  outer.destroy();
});

test('the caller may close its descriptor at once: the bytes still go, then FIN once the writer is closed', async () => {
  const { outer, inner } = await pair();
  const got = collect(outer);
  const w = new SocketWriter(fdOf(inner));
  const data = randomBytes(3 * 2 ** 20);
  w.send(data);
  inner.destroy(); // Node closes its descriptor; the writer's duplicate keeps the socket
  w.close(); // closed once written: the peer sees the bytes, then EOF
  assert.equal(sha(await got), sha(data));
  outer.destroy();
});

test('after the peer reset, sends are dropped (0) and nothing breaks', async () => {
  const { outer, inner } = await pair();
  const w = new SocketWriter(fdOf(inner));
  w.send('hello');
  outer.resetAndDestroy();
  await new Promise((r) => setTimeout(r, 50));
  let n = 1;
  for (let i = 0; i < 50 && n !== 0; i++) {
    n = w.send(randomBytes(65536));
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(n, 0, 'dropped once the socket failed');
  assert.equal(
    w.drained(() => {}),
    true,
  );
  w.close();
  assert.equal(w.send('late'), 0);
  inner.destroy();
});

test('many writers at once, closed with data still queued: every socket is closed in the end', async () => {
  const all = await Promise.all(Array.from({ length: 40 }, () => pair()));
  for (const p of all) p.outer.on('error', () => {});
  await new Promise((r) => setTimeout(r, 20));
  const base = sockets();
  const got = all.map((p) => collect(p.outer));
  for (const [i, p] of all.entries()) {
    const w = new SocketWriter(fdOf(p.inner));
    w.send(randomBytes(100_000 + i));
    w.close();
    p.inner.destroy();
  }
  const sizes = (await Promise.all(got)).map((b) => b.length);
  assert.deepEqual(
    sizes,
    all.map((_, i) => 100_000 + i),
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(sockets() <= base - all.length, `sockets: ${base} before, ${sockets()} after`);
  for (const p of all) p.outer.destroy();
});

test('bad arguments are a TypeError; a descriptor that is not open a named error', () => {
  assert.throws(() => new SocketWriter(-1), TypeError);
  assert.throws(
    () => new SocketWriter(987654),
    (e: unknown) =>
      isNativeError(e) && /EBADF/.test((e as Error).message + String((e as { code?: string }).code)),
  );
});

test('a peer that resets: the queue is dropped, drained() answers, and error names the errno', async () => {
  const { outer, inner } = await pair();
  const w = new SocketWriter(fdOf(inner));
  assert.equal(w.error, null);
  outer.pause(); // nothing read: the writes back up
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < 8; i++) w.send(chunk);
  outer.resetAndDestroy();
  await new Promise<void>((resolve) => {
    const again = (): void => {
      if (w.error !== null) resolve();
      else if (w.drained(again)) setTimeout(again, 20).unref?.();
      else w.send(chunk); // keep writing until the reset is met
    };
    again();
  });
  const e: unknown = w.error;
  assert.ok(isNativeError(e), String(e));
  assert.match((e as { code: string }).code, /NATIVE_ERR_(EPIPE|ECONNRESET)/);
  assert.equal(w.send(chunk), 0, 'later sends are dropped');
  w.close();
  inner.destroy();
});

test('trySend writes at once on the calling thread when nothing is queued; mixed with send, bytes stay in order', async () => {
  const { outer, inner } = await pair();
  const got = collect(outer);
  const w = new SocketWriter(fdOf(inner));
  // Nothing queued: written before the call returns, no reactor turn in between.
  assert.equal(w.trySend('GET / HTTP/1.1\r\n\r\n', 'latin1'), 0);
  assert.equal(w.written, 18);
  const expected: Buffer[] = [Buffer.from('GET / HTTP/1.1\r\n\r\n', 'latin1')];
  for (let i = 0; i < 400; i++) {
    const b =
      i % 5 === 0 ? randomBytes(1 + ((i * 7919) % 200000)) : Buffer.from(`piece ${i} \u2603\n`, 'utf8');
    if (i % 2 === 0) w.send(b);
    else if (i % 3 === 0) w.trySend(b.toString('latin1'), 'latin1');
    else w.trySend(b);
    expected.push(b);
  }
  w.end();
  const all = Buffer.concat(expected);
  assert.equal(sha(await got), sha(all));
  assert.equal(w.written, all.length);
  w.close();
  inner.destroy();
  outer.destroy();
});

test('trySend to a peer that does not read: the rest is queued for the reactor thread and arrives once read', async () => {
  const { outer, inner } = await pair();
  outer.pause();
  const w = new SocketWriter(fdOf(inner));
  const big = randomBytes(8 * 1024 * 1024);
  const queued = w.trySend(big);
  assert.ok(queued > 0 && queued < big.length, `part written at once, the rest queued (${queued})`);
  const tail = Buffer.from('the end', 'latin1');
  w.trySend(tail); // behind the queue, not before it
  const drained = new Promise<void>((resolve) => {
    if (w.drained(resolve)) resolve();
  });
  const got = collect(outer);
  outer.resume();
  await drained;
  w.end();
  assert.equal(sha(await got), sha(Buffer.concat([big, tail])));
  w.close();
  inner.destroy();
  outer.destroy();
});

test('trySend after the peer reset: an error, and later sends are dropped', async () => {
  const { outer, inner } = await pair();
  const w = new SocketWriter(fdOf(inner));
  outer.resetAndDestroy();
  await once(outer, 'close');
  let error = null;
  for (let i = 0; i < 50 && error === null; i++) {
    w.trySend(Buffer.alloc(1024));
    error = w.error;
    if (error === null) await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(error !== null && isNativeError(error), 'the reset is reported');
  assert.equal(w.trySend('more', 'latin1'), -1, 'dropped: the socket failed');
  w.close();
  inner.destroy();
});

test('a writer only its own drain callback refers to is not collected: the callback comes, then the end', async () => {
  // Once the closure returns, the writer is reachable only through the callback it holds (the
  // promise's resolve reaches the awaiting test, never the other way round). A collection here
  // used to finalise it: the writer let go (no drain news, no end), the test hung.
  const { outer, inner } = await pair();
  outer.pause();
  const got = collect(outer);
  const big = randomBytes(8 * 2 ** 20);
  let collected = false;
  const registry = new FinalizationRegistry(() => {
    collected = true;
  });
  const drained = ((): Promise<void> => {
    const w = new SocketWriter(fdOf(inner));
    registry.register(w, 'writer');
    const queued = w.trySend(big);
    assert.ok(queued > 0, `the peer reads nothing: part of it is queued (${queued})`);
    return new Promise<void>((resolve) => {
      const done = (): void => {
        w.end();
        w.close();
        resolve();
      };
      if (w.drained(done)) done();
    });
  })();
  try {
    for (let i = 0; i < 3; i++) {
      gc();
      await nextTurn(); // finalisers of collected owners run from the loop
    }
    outer.resume();
    // Bounded: without the hold the drain never comes (an 8 MiB loopback write takes milliseconds).
    const outcome = await Promise.race([
      drained.then(() => 'drained'),
      sleep(8000, 'no drain', { ref: false }),
    ]);
    assert.equal(outcome, 'drained');
    assert.equal(collected, false, 'collected while its drain was due');
    assert.equal(sha(await got), sha(big), 'every byte, then the end');
  } finally {
    inner.destroy();
    outer.destroy();
  }
});

// Only a reactor thread writes while this thread is busy (inline, the JS loop drives the writer).
const inline = process.env.OXY_REACTOR === 'inline';
test('a drain asked for again before the last one was delivered waits for the bytes queued since', {
  skip: inline && 'OXY_REACTOR=inline: no reactor thread to write while the JS thread is busy',
}, async () => {
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

test('a writer that waited for EPOLLOUT leaves no registration behind when the caller keeps its descriptor', async () => {
  // Registrations belong to the open file description: a duplicate closed while the caller's
  // descriptor keeps the socket open would stay in the reactor's set (and point at a freed
  // writer) unless the writer takes it out first. Every writer's duplicate gets the same number.
  const { outer, inner } = await pair();
  outer.pause();
  const fd = fdOf(inner);
  const ino = socketInode(fd);
  const theirs = (): { tfd: number }[] => epollEntries().filter((e) => e.ino === ino && e.tfd !== fd);
  const w = new SocketWriter(fd);
  const big = randomBytes(8 * 2 ** 20);
  const got = collect(outer);
  try {
    assert.ok(w.send(big) > 0);
    const deadline = Date.now() + 8000;
    while (theirs().length === 0) {
      assert.ok(Date.now() < deadline, 'the writer never waited for EPOLLOUT');
      await sleep(5);
    }
    const drained = new Promise<void>((resolve) => {
      if (w.drained(resolve)) resolve();
    });
    outer.resume();
    await drained;
    w.end();
    w.close(); // the duplicate is closed; Node's descriptor of the socket stays open
    assert.equal(sha(await got), sha(big));
    assert.deepEqual(theirs(), [], 'no registration of the socket but under its own descriptor');
  } finally {
    w.close();
    inner.destroy();
    outer.destroy();
  }
});
