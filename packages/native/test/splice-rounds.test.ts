/**
 * Splices whose directions keep using up their round: with a round of 64 KiB (the addon reads
 * OXY_SPLICE_ROUND_BYTES once, at this process's first splice) a bulk transfer goes on only
 * through the re-arm of its source at the end of each round (edge-triggered: no new edge comes
 * for bytes already waiting). A lost re-arm would stall a transfer; a round that never ends
 * would keep the short tunnel waiting behind the bulk ones.
 */
process.env.OXY_SPLICE_ROUND_BYTES = String(64 * 1024);

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { FdSplice, type SpliceEnd } from 'native';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

/** Splices two fresh connections; `a` and `b` are the outer ends. */
async function joined(): Promise<{ a: net.Socket; b: net.Socket; end: Promise<SpliceEnd> }> {
  const x = await pair();
  const y = await pair();
  let done!: (e: SpliceEnd) => void;
  const end = new Promise<SpliceEnd>((r) => {
    done = r;
  });
  new FdSplice(fdOf(x.inner), fdOf(y.inner), done);
  return { a: x.outer, b: y.outer, end };
}

test('bulk transfers in small rounds go on to the end, both ways, beside a short tunnel', async () => {
  const size = 16 * 2 ** 20;
  const bulk = await Promise.all([joined(), joined()]);
  const checks = bulk.map(async (j) => {
    const up = randomBytes(size);
    const down = randomBytes(size / 2);
    const atB = collect(j.b);
    const atA = collect(j.a);
    j.a.end(up);
    j.b.end(down);
    const [gotB, gotA] = await Promise.all([atB, atA]);
    assert.equal(sha(gotB), sha(up));
    assert.equal(sha(gotA), sha(down));
    const r = await j.end;
    assert.equal(r.error, undefined);
    assert.deepEqual([r.bytes0to1, r.bytes1to0], [size, size / 2]);
    return performance.now();
  });
  const s = await joined();
  const atB = collect(s.b);
  const atA = collect(s.a);
  s.a.end('hi');
  s.b.end('there');
  assert.equal((await atB).toString(), 'hi');
  assert.equal((await atA).toString(), 'there');
  assert.equal((await s.end).error, undefined);
  const shortDone = performance.now();
  const bulkDone = await Promise.all(checks);
  assert.ok(
    bulkDone.every((t) => t > shortDone),
    'the short tunnel did not wait for the bulk ones',
  );
  for (const j of [...bulk, s]) {
    j.a.destroy();
    j.b.destroy();
  }
});
