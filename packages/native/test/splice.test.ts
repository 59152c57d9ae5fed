/**
 * Kernel splicing between two real TCP connections on loopback: the middle ends (accepted with
 * `pauseOnConnect`, so Node never reads them) are spliced; the outer ends talk as if connected
 * to each other. Sizes from 1 byte to 64 MiB, half-close both ways, reset, stop.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import {
  FdSplice,
  type SpliceEnd,
  spliceBytes,
  spliceEnd,
  spliceTotal,
  startSplice,
  stopSplice,
  trimMemory,
} from 'native';
import { addon } from '../src/addon.ts';
import { openFds } from './fixtures/open-fds.ts';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

/** Two outer sockets joined through a splice of their inner ends. */
async function joined(): Promise<{
  a: net.Socket;
  b: net.Socket;
  splice: FdSplice;
  end: Promise<SpliceEnd>;
  inners: net.Socket[];
}> {
  const x = await pair();
  const y = await pair();
  let done!: (e: SpliceEnd) => void;
  const end = new Promise<SpliceEnd>((r) => {
    done = r;
  });
  const splice = new FdSplice(fdOf(x.inner), fdOf(y.inner), done);
  return { a: x.outer, b: y.outer, splice, end, inners: [x.inner, y.inner] };
}

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

for (const size of [1, 65537, 64 * 2 ** 20]) {
  test(`moves ${size} bytes each way and carries half-close both ways`, async () => {
    const { a, b, end, inners } = await joined();
    const up = randomBytes(size);
    const down = randomBytes(size);
    const atB = collect(b);
    const atA = collect(a);
    a.end(up); // FIN from a: b sees end, the other direction goes on
    const gotB = await atB;
    assert.equal(gotB.length, size);
    assert.equal(sha(gotB), sha(up));
    b.end(down);
    const gotA = await atA;
    assert.equal(sha(gotA), sha(down));
    const r = await end;
    assert.equal(r.error, undefined);
    assert.equal(r.bytes0to1, size);
    assert.equal(r.bytes1to0, size);
    for (const s of [a, b, ...inners]) s.destroy();
  });
}

test('the other side may close first', async () => {
  const { a, b, end, inners } = await joined();
  const atA = collect(a);
  b.end('from b');
  assert.equal((await atA).toString(), 'from b');
  const atB = collect(b);
  a.end('from a');
  assert.equal((await atB).toString(), 'from a');
  const r = await end;
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [6, 6]);
  for (const s of [a, b, ...inners]) s.destroy();
});

test('a reset ends the splice with an error naming the side', async () => {
  const { a, b, end, inners } = await joined();
  a.write('x');
  await once(b, 'data');
  a.resetAndDestroy();
  const r = await end;
  assert.ok(r.error, 'an error');
  assert.equal(r.side, 0);
  assert.match(r.error.code, /^NATIVE_ERR_(ECONNRESET|EPIPE)$/);
  assert.equal(r.bytes0to1, 1);
  for (const s of [b, ...inners]) s.destroy();
});

test('bytes() counts while running; stop() ends without a callback', async () => {
  const { a, b, splice, end, inners } = await joined();
  a.write('12345');
  await once(b, 'data');
  assert.deepEqual(splice.bytes(), [5, 0]);
  assert.equal(splice.running, true);
  let called = false;
  void end.then(() => {
    called = true;
  });
  assert.deepEqual(splice.stop(), [5, 0]);
  assert.equal(splice.running, false);
  assert.deepEqual(splice.stop(), [0, 0]);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(called, false);
  for (const s of [a, b, ...inners]) s.destroy();
});

test('bad arguments are a TypeError', () => {
  assert.throws(() => new FdSplice(-1, 5, () => {}), TypeError);
  assert.throws(() => new FdSplice(7, 7, () => {}), TypeError);
});

test('a descriptor that is not open is refused with a named error', () => {
  assert.throws(() => new FdSplice(100000 - 1, 100000 - 2, () => {}), /NATIVE_ERR_EBADF|refused/);
});

test('the caller may close its descriptors once started: bytes still flow, FINs come at the end', async () => {
  const { a, b, end, inners } = await joined();
  // Node's handles closed: only the splicer's duplicates keep the middle sockets open.
  for (const s of inners) s.destroy();
  await new Promise((r) => setTimeout(r, 20));
  const atB = collect(b);
  const atA = collect(a);
  a.write('up');
  b.write('down');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(b.readableEnded, false, 'no FIN from closing a duplicate');
  a.end();
  assert.equal((await atB).toString(), 'up');
  b.end();
  assert.equal((await atA).toString(), 'down');
  const r = await end;
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [2, 4]);
  for (const s of [a, b]) s.destroy();
});

test('startSplice: the owner object gets onSpliceEnd, once, and can splice again after', async () => {
  const x = await pair();
  const y = await pair();
  const calls: number[][] = [];
  const owner = {
    onSpliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): void {
      calls.push([kind, b01, b10, errno, side]);
    },
  };
  startSplice(owner, fdOf(x.inner), fdOf(y.inner));
  assert.throws(() => startSplice(owner, fdOf(x.inner), fdOf(y.inner)), TypeError, 'one splice per owner');
  x.outer.write('abc');
  await once(y.outer, 'data');
  assert.equal(spliceTotal(owner), 3);
  assert.deepEqual(spliceBytes(owner), [3, 0]);
  x.outer.end();
  y.outer.resume();
  y.outer.end();
  await new Promise<void>((r) => {
    const t = setInterval(() => {
      if (calls.length > 0) {
        clearInterval(t);
        r();
      }
    }, 5);
  });
  assert.deepEqual(calls, [[0, 3, 0, 0, -1]]);
  assert.throws(() => spliceBytes(owner), TypeError, 'ended: nothing runs');
  assert.throws(() => stopSplice(owner), TypeError);
  const end = spliceEnd(1, 1, 2, 104, 1);
  assert.equal(end.error?.code, 'NATIVE_ERR_ECONNRESET');
  assert.equal(end.side, 1);
  // The owner is free again.
  const z = await pair();
  const w = await pair();
  startSplice(owner, fdOf(z.inner), fdOf(w.inner));
  stopSplice(owner);
  for (const s of [x.outer, y.outer, x.inner, y.inner, z.outer, z.inner, w.outer, w.inner]) s.destroy();
  assert.equal(calls.length, 1);
});

test('startSplice refuses an owner that is not an object', () => {
  assert.throws(() => startSplice(42 as never, 5, 6), TypeError);
});

test('many splices at once: ends, resets and stops interleaved, no descriptor left behind', async () => {
  const fds = (): number => openFds().filter((l) => !l.startsWith('pipe:')).length; // pooled pipes stay
  const joins = await Promise.all(Array.from({ length: 60 }, () => joined()));
  for (const j of joins) for (const s of j.inners) s.destroy(); // only the splicers' duplicates remain
  await new Promise((r) => setTimeout(r, 20));
  const base = fds();
  const outcomes = joins.map(async (j, i) => {
    j.a.on('error', () => {});
    j.b.on('error', () => {});
    j.b.resume();
    j.a.resume();
    j.a.write(randomBytes(1000 + i * 100));
    if (i % 3 === 0) {
      j.a.end();
      j.b.end();
      const r = await j.end;
      assert.equal(r.error, undefined);
      assert.equal(r.bytes0to1, 1000 + i * 100);
    } else if (i % 3 === 1) {
      await new Promise((r) => setTimeout(r, i % 7));
      (i % 2 === 0 ? j.a : j.b).resetAndDestroy();
      const r = await j.end;
      assert.ok(r.error !== undefined || r.bytes0to1 >= 0);
    } else {
      await new Promise((r) => setTimeout(r, i % 5));
      j.splice.stop();
      assert.equal(j.splice.running, false);
    }
    j.a.destroy();
    j.b.destroy();
  });
  await Promise.all(outcomes);
  await new Promise((r) => setTimeout(r, 50));
  // Each splice held two duplicates (and maybe pipes); all are closed now.
  assert.ok(fds() <= base - 2 * 60, `descriptors: ${base} before, ${fds()} after`);
});

test('trimMemory gives freed malloc memory back and says whether any was released', () => {
  const held: Buffer[] = [];
  for (let i = 0; i < 2000; i++) held.push(Buffer.allocUnsafeSlow(8000));
  held.length = 0;
  assert.equal(typeof trimMemory(), 'boolean');
});

/** The pipes this process holds open (one entry per pipe, however many ends). */
const pipes = (): Set<string> => new Set(openFds().filter((l) => l.startsWith('pipe:')));

/** A short tunnel: a few bytes each way, both ends closed; resolves once the splice ended. */
async function shortTunnel(up: Buffer | string = 'ping', down: Buffer | string = 'pong'): Promise<SpliceEnd> {
  const { a, b, end, inners } = await joined();
  const atB = collect(b);
  const atA = collect(a);
  a.end(up);
  b.end(down);
  await Promise.all([atA, atB]);
  const r = await end;
  for (const s of [a, b, ...inners]) s.destroy();
  return r;
}

/** Past the bytes a direction copies before it splices (COPY_BYTES in splice.h). */
const PAST_COPY = 40 * 1024;

/** Resolves once `n` bytes came in on `s`. */
function received(s: net.Socket, n: number): Promise<void> {
  let got = 0;
  return new Promise((resolve) => {
    const on = (d: Buffer): void => {
      got += d.length;
      if (got < n) return;
      s.off('data', on);
      resolve();
    };
    s.on('data', on);
  });
}

test('pipes of ended splices are pooled: later tunnels make and close none', async () => {
  const { a, b, end, inners } = await joined();
  const atB = received(b, PAST_COPY);
  a.write(randomBytes(PAST_COPY));
  await atB;
  const atA = received(a, PAST_COPY);
  b.write(randomBytes(PAST_COPY));
  await atA;
  const during = pipes(); // with this splice's two pipes
  a.end();
  b.end();
  assert.equal((await end).error, undefined);
  for (const s of [a, b, ...inners]) s.destroy();
  const pooled = pipes();
  for (const p of during) assert.ok(pooled.has(p), `${p} kept for reuse`);
  for (let i = 0; i < 5; i++) {
    const r = await shortTunnel(randomBytes(PAST_COPY + i), 'x');
    assert.equal(r.error, undefined);
    assert.deepEqual([r.bytes0to1, r.bytes1to0], [PAST_COPY + i, 1]);
  }
  assert.deepEqual(pipes(), pooled, 'the same pipes, reused');
});

test('a short exchange is copied, not spliced: it takes no pipe', async () => {
  await shortTunnel(randomBytes(PAST_COPY), randomBytes(PAST_COPY)); // pipes in the pool
  const { a, b, end, inners } = await joined();
  const before = pipes();
  let pooled = 0;
  // Each message is read and written through the reactor's buffer; no pipe leaves the pool.
  for (let i = 0; i < 3; i++) {
    const atB = received(b, 1000);
    a.write(randomBytes(1000));
    await atB;
    const atA = received(a, 2000);
    b.write(randomBytes(2000));
    await atA;
    assert.deepEqual(pipes(), before);
    pooled++;
  }
  a.end();
  b.end();
  const r = await end;
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [3000, 6000]);
  assert.equal(pooled, 3);
  for (const s of [a, b, ...inners]) s.destroy();
});

test('a pipe grown for a bulk transfer is closed at the end, not pooled', async () => {
  await shortTunnel(); // at least two pipes in the pool
  const before = pipes();
  const size = 3 * 2 ** 20; // past the 1 MiB after which a direction's pipe grows
  const r = await shortTunnel(randomBytes(size), '');
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [size, 0]);
  const after = pipes();
  // Both directions took a pooled pipe; the one that carried EOF only went back.
  assert.equal(after.size, before.size - 1);
  for (const p of after) assert.ok(before.has(p));
});

test('a pipe that still holds bytes is not pooled (a reset mid-transfer)', async () => {
  await shortTunnel();
  const before = pipes();
  const { a, b, end, inners } = await joined();
  b.pause(); // b reads nothing: the a → b pipe fills and stays full
  b.on('error', () => {});
  a.on('error', () => {});
  a.write(randomBytes(8 * 2 ** 20));
  await new Promise((r) => setTimeout(r, 100));
  b.resetAndDestroy();
  const r = await end;
  assert.ok(r.error, 'an error');
  assert.equal(r.side, 1);
  for (const s of [a, ...inners]) s.destroy();
  const after = pipes();
  assert.ok(after.size < before.size + 1, `pipes: ${before.size} before, ${after.size} after`);
  for (const p of after) assert.ok(before.has(p), 'no new pipe pooled');
});

test('a blocking descriptor is made non-blocking (the loop never waits on a socket)', async () => {
  const x = await pair();
  const y = await pair();
  // The sockets' descriptions made blocking: a splice read past the last byte would then wait.
  for (const s of [x.inner, y.inner]) addon.setFdFlags(fdOf(s), false, true);
  let done!: (e: SpliceEnd) => void;
  const end = new Promise<SpliceEnd>((r) => {
    done = r;
  });
  new FdSplice(fdOf(x.inner), fdOf(y.inner), done);
  const atB = collect(y.outer);
  const atA = collect(x.outer);
  // Enough both ways to fill the socket buffers: a blocking write would then wait for a reader
  // on this very thread, forever.
  const up = randomBytes(16 * 2 ** 20);
  const down = randomBytes(16 * 2 ** 20);
  x.outer.end(up);
  y.outer.end(down);
  const [gotA, gotB] = await Promise.all([atA, atB]);
  assert.equal(sha(gotB), sha(up));
  assert.equal(sha(gotA), sha(down));
  const r = await end;
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [up.length, down.length]);
  for (const s of [x.outer, y.outer, x.inner, y.inner]) s.destroy();
});

test('a direction that uses up its round lets other splices run before it goes on', async () => {
  // Two bulk tunnels and a short one at once: all finish, bytes intact (the round's budget
  // re-arms a busy splice for the next loop turn instead of running it to the end).
  const size = 24 * 2 ** 20;
  const bulk = await Promise.all([joined(), joined()]);
  const sums = bulk.map((j) => {
    const data = randomBytes(size);
    const got = collect(j.b);
    j.a.end(data);
    j.b.end();
    j.a.resume();
    return got.then((g) => [sha(g), sha(data)]);
  });
  const short = shortTunnel('hi', 'there');
  for (const [got, sent] of await Promise.all(sums)) assert.equal(got, sent);
  assert.equal((await short).error, undefined);
  for (const j of bulk) {
    const r = await j.end;
    assert.equal(r.error, undefined);
    assert.equal(r.bytes0to1, size);
    for (const s of [j.a, j.b, ...j.inners]) s.destroy();
  }
});

test('stops from the JS thread while the reactor thread moves bytes: no end callback after, nothing left behind', async () => {
  // The reactor thread may be inside a splice's round when JS stops it: the splicer's lock
  // makes the stop wait for the round, and the struct outlives any event already taken.
  const fds = (): number => openFds().filter((l) => !l.startsWith('pipe:')).length;
  const joins = await Promise.all(Array.from({ length: 30 }, () => joined()));
  for (const j of joins) for (const s of j.inners) s.destroy();
  await new Promise((r) => setTimeout(r, 20));
  const base = fds();
  let ends = 0;
  for (const [i, j] of joins.entries()) {
    j.a.on('error', () => {});
    j.b.on('error', () => {});
    j.a.resume();
    j.b.resume();
    void j.end.then(() => ends++);
    const chunk = randomBytes(256 * 1024);
    for (let k = 0; k < 8; k++) {
      j.a.write(chunk);
      j.b.write(chunk);
    }
    await new Promise((r) => setTimeout(r, i % 4));
    const [up, down] = j.splice.stop();
    assert.ok(up >= 0 && down >= 0);
    assert.equal(j.splice.running, false);
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(ends, 0, 'no end callback after a stop');
  for (const j of joins) {
    j.a.destroy();
    j.b.destroy();
  }
  assert.ok(fds() <= base - 2 * joins.length, `descriptors: ${base} before, ${fds()} after`);
});
