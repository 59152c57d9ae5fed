/**
 * Offloaded socket writes on real loopback TCP: whatever writes to the socket (write, cork and
 * writev, writeDirect, end, destroySoon) arrives in order with FIN last; backpressure holds
 * (write() returns false, 'drain' comes); a splice started after offloaded writes sends them
 * first; stopping the offload gives Node its writes back.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { socketPair } from '../../../test/fixtures/socket-pair.ts';
import {
  isOffloaded,
  offloadedBytes,
  offloadWrites,
  stopOffload,
  writeDirect,
  writesFlushed,
} from './offload.ts';
import { spliceTunnel } from './splice.ts';

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('every way of writing keeps its order, and end() is a FIN after the last byte', async () => {
  const { outer, inner } = await socketPair();
  assert.equal(offloadWrites(inner), true);
  assert.equal(isOffloaded(inner), true);
  const got = collect(outer);
  const parts: Buffer[] = [];
  const add = (b: Buffer): Buffer => {
    parts.push(b);
    return b;
  };
  for (let i = 0; i < 100; i++) {
    if (i % 4 === 0) inner.write(add(randomBytes(1 + i * 997)));
    else if (i % 4 === 1) {
      const s = `line ${i} é\r\n`;
      inner.write(s, 'latin1');
      add(Buffer.from(s, 'latin1'));
    } else if (i % 4 === 2) {
      inner.cork();
      inner.write(add(Buffer.from(`a${i}`)));
      inner.write(`b${i} ✓`, 'utf8');
      add(Buffer.from(`b${i} ✓`, 'utf8'));
      inner.write(add(Buffer.from('68656c6c6f', 'hex')).toString('hex'), 'hex');
      inner.uncork();
    } else {
      writeDirect(inner, add(randomBytes(300)), 'latin1');
    }
  }
  inner.end();
  const all = Buffer.concat(parts);
  assert.equal(sha(await got), sha(all));
  assert.equal(offloadedBytes(inner), all.length);
});

test('backpressure: write() returns false past the mark and drain comes once the peer reads', async () => {
  const { outer, inner } = await socketPair();
  offloadWrites(inner);
  outer.pause();
  const chunk = randomBytes(256 * 1024);
  let full = false;
  let sent = 0;
  for (let i = 0; i < 64 && !full; i++) {
    full = !inner.write(chunk);
    sent += chunk.length;
  }
  assert.equal(full, true, 'the socket said it is full');
  const drained = once(inner, 'drain');
  const got = collect(outer);
  outer.resume();
  await drained;
  inner.end();
  assert.equal((await got).length, sent);
});

test('destroySoon after writes: the bytes, then FIN; the writer closes with the socket', async () => {
  const { outer, inner } = await socketPair();
  offloadWrites(inner);
  const got = collect(outer);
  const closed = once(inner, 'close');
  const data = randomBytes(2 * 2 ** 20);
  writeDirect(inner, data, 'latin1');
  inner.destroySoon();
  assert.equal(sha(await got), sha(data));
  await closed;
  assert.equal(isOffloaded(inner), false);
});

test('a splice after offloaded writes sends them first, then the spliced bytes', async () => {
  const c = await socketPair();
  const u = await socketPair();
  offloadWrites(c.inner);
  const head = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n');
  const big = randomBytes(512 * 1024); // more than a socket takes at once: queued when the splice starts
  c.inner.write(head);
  c.inner.write(big);
  const done = spliceTunnel(c.inner, u.outer, { idleTimeoutMs: 0, maxLifetimeMs: 0 });
  const atClient = collect(c.outer);
  u.inner.end('from upstream');
  u.inner.resume();
  c.outer.end();
  assert.equal(sha(await atClient), sha(Buffer.concat([head, big, Buffer.from('from upstream')])));
  assert.equal((await done).reason, 'done');
});

test('stopOffload after writesFlushed: Node writes again, in order', async () => {
  const { outer, inner } = await socketPair();
  offloadWrites(inner);
  const got = collect(outer);
  inner.write('offloaded;');
  await writesFlushed(inner);
  stopOffload(inner);
  assert.equal(isOffloaded(inner), false);
  inner.end('by node');
  assert.equal((await got).toString(), 'offloaded;by node');
});

test('sockets it cannot take stay as they were', async () => {
  const { inner } = await socketPair();
  inner.cork();
  inner.write('held');
  assert.equal(offloadWrites(inner), false, 'Node holds writes');
  inner.uncork();
  const pending = new net.Socket();
  assert.equal(offloadWrites(pending), false, 'no descriptor');
});
