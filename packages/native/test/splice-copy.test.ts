/**
 * The copying start of a splice: a direction's first bytes go through the reactor's buffer
 * (read and write) before it takes a pipe. Here everything is copied (OXY_SPLICE_COPY_BYTES,
 * read once, at this process's first splice, set past every transfer) in small rounds
 * (OXY_SPLICE_ROUND_BYTES), so the paths a short tunnel only brushes carry whole transfers: a
 * receiver that stops reading (bytes held until it takes them), a source that stays readable
 * past its round (the re-arm), half-close and a reset.
 */
process.env.OXY_SPLICE_COPY_BYTES = String(2 ** 40);
process.env.OXY_SPLICE_ROUND_BYTES = String(64 * 1024);

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { FdSplice, type SpliceEnd } from 'native';
import { openFds } from './fixtures/open-fds.ts';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pipes = (): Set<string> => new Set(openFds().filter((l) => l.startsWith('pipe:')));

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

async function joined(): Promise<{
  a: net.Socket;
  b: net.Socket;
  end: Promise<SpliceEnd>;
  all: net.Socket[];
}> {
  const x = await pair();
  const y = await pair();
  let done!: (e: SpliceEnd) => void;
  const end = new Promise<SpliceEnd>((r) => {
    done = r;
  });
  new FdSplice(fdOf(x.inner), fdOf(y.inner), done);
  return { a: x.outer, b: y.outer, end, all: [x.outer, y.outer, x.inner, y.inner] };
}

test('a receiver that stops reading holds the copy back; once it reads, every byte arrives in order', async () => {
  const before = pipes();
  const { a, b, end, all } = await joined();
  const up = randomBytes(24 * 2 ** 20); // past the loopback socket buffers: the copy must wait
  b.pause();
  a.end(up);
  await new Promise((r) => setTimeout(r, 150));
  const got = collect(b);
  b.resume();
  const down = randomBytes(3 * 2 ** 20);
  const atA = collect(a);
  b.end(down);
  assert.equal(sha(await got), sha(up));
  assert.equal(sha(await atA), sha(down));
  const r = await end;
  assert.equal(r.error, undefined);
  assert.deepEqual([r.bytes0to1, r.bytes1to0], [up.length, down.length]);
  assert.deepEqual(pipes(), before, 'copied throughout: no pipe taken');
  for (const s of all) s.destroy();
});

test('many small messages each way, then half-close from either side', async () => {
  const { a, b, end, all } = await joined();
  const atB = collect(b);
  const atA = collect(a);
  const ups: Buffer[] = [];
  for (let i = 0; i < 200; i++) {
    const m = randomBytes(1 + (i % 97));
    ups.push(m);
    a.write(m);
  }
  a.end();
  const gotB = await atB;
  assert.equal(sha(gotB), sha(Buffer.concat(ups)));
  b.end('after the client finished');
  assert.equal((await atA).toString(), 'after the client finished');
  const r = await end;
  assert.equal(r.error, undefined);
  for (const s of all) s.destroy();
});

test('a reset while copying ends the splice with an error on that side', async () => {
  const { a, b, end, all } = await joined();
  a.on('error', () => {});
  b.on('error', () => {});
  a.write('hello');
  await once(b, 'data');
  b.resetAndDestroy();
  const r = await end;
  assert.ok(r.error, 'an error');
  assert.equal(r.side, 1);
  for (const s of all) s.destroy();
});
