/**
 * Sending runs of datagrams with UDP segmentation offload (udp-send.c): what arrives is exactly
 * what was sent, datagram by datagram and in order, whatever the mix of sizes, headers,
 * destinations and run lengths; `sendRange` sends part of a received batch; and where the kernel
 * refuses a run (a segment over the route's MTU, in a namespace made by the test) the datagrams
 * go one by one. Receivers are node:dgram sockets and the addon's own, which do not ask for
 * coalesced reads, so each datagram is its own message there.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { netns, type UdpOutgoing, UdpSocket } from 'native';

const closers: (() => void)[] = [];
after(() => {
  for (const c of closers.reverse()) c();
});

function udp(opts: Parameters<typeof UdpSocket.bind>[0]): UdpSocket {
  const s = UdpSocket.bind(opts);
  closers.push(() => s.close());
  return s;
}

function peer(): Promise<dgram.Socket> {
  const p = dgram.createSocket('udp4');
  closers.push(() => p.close());
  return new Promise((resolve) => p.bind(0, '127.0.0.1', () => resolve(p)));
}

/** Resolves with the first `n` payloads `p` receives, as hex (rejects after 5 s). */
function received(p: dgram.Socket, n: number): Promise<string[]> {
  const got: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} datagrams arrived`)), 5000);
    const on = (m: Buffer): void => {
      got.push(m.toString('hex'));
      if (got.length === n) {
        clearTimeout(timer);
        p.off('message', on);
        resolve(got);
      }
    };
    p.on('message', on);
  });
}

/** A payload of `size` bytes that names its sequence number `seq`. */
function payload(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size, seq & 0xff);
  if (size >= 2) b.writeUInt16BE(seq, 0);
  return b;
}

test('runs of one size, a shorter last, mixed sizes, empty datagrams and two destinations arrive exactly, in order', async () => {
  const s = udp({ address: '127.0.0.1', sendBufferSize: 4 << 20 });
  const [a, b] = [await peer(), await peer()];
  // 70 equal (more than one run can carry), a shorter one (ends a run), equal again, a longer
  // one (starts a run), empties, 1,200-byte ones past 60,000 bytes a run, then alternating peers.
  const sizes = [...Array(70).fill(64), 20, ...Array(5).fill(64), 100, 100, 0, 0, ...Array(60).fill(1200), 7];
  const items: UdpOutgoing[] = sizes.map((n, i) => ({
    data: payload(i, n),
    address: '127.0.0.1',
    port: a.address().port,
  }));
  const toB: number[] = [];
  for (let i = 0; i < 10; i++) {
    const seq = sizes.length + i;
    const to = i % 3 === 0 ? b : a;
    if (to === b) toB.push(seq);
    items.push({ data: payload(seq, 300), address: '127.0.0.1', port: to.address().port });
  }
  const atA = received(a, items.length - toB.length);
  const atB = received(b, toB.length);
  assert.equal(s.sendBatch(items), items.length);
  const expectA = items
    .filter((it) => it.port === a.address().port)
    .map((it) => Buffer.from(it.data).toString('hex'));
  const expectB = items
    .filter((it) => it.port === b.address().port)
    .map((it) => Buffer.from(it.data).toString('hex'));
  assert.deepEqual(await atA, expectA);
  assert.deepEqual(await atB, expectB);
  const st = s.stats();
  assert.equal(st.sent, items.length);
  assert.equal(st.sentBytes, sizes.reduce((x, y) => x + y, 0) + 10 * 300);
  assert.equal(st.sendErrors, 0);
});

test('a header before every datagram of a run, and a batch relayed to one target', async () => {
  const s = udp({ address: '127.0.0.1' });
  const [a, b] = [await peer(), await peer()];
  const target = UdpSocket.target('127.0.0.1', b.address().port);
  s.onBatch((batch) => s.sendBatch(batch, target, Buffer.from('HDR|')));
  const sent = Array.from({ length: 40 }, (_, i) => payload(i, i < 30 ? 50 : 10));
  const got = received(b, sent.length);
  for (const d of sent) a.send(d, s.address().port, '127.0.0.1');
  assert.deepEqual(
    await got,
    sent.map((d) => Buffer.concat([Buffer.from('HDR|'), d]).toString('hex')),
  );
});

test('sendRange sends part of a received batch without a skipped header; bad ranges are refused', async () => {
  const s = udp({ address: '127.0.0.1' });
  const [a, b] = [await peer(), await peer()];
  const target = UdpSocket.target('127.0.0.1', b.address().port);
  s.setReading(false);
  for (let i = 0; i < 10; i++)
    a.send(Buffer.concat([Buffer.from('PP'), payload(i, 32)]), s.address().port, '127.0.0.1');
  await sleep(50);
  const counts: number[] = [];
  s.onBatch((batch) => {
    counts.push(batch.count);
    assert.throws(() => s.sendRange(batch, 0, batch.count + 1), {
      name: 'TypeError',
      message: /no datagrams/,
    });
    assert.throws(() => s.sendRange(batch, 2, 1), { name: 'TypeError', message: /no datagrams/ });
    assert.throws(() => s.sendRange(batch, 0, 1, target, 99), { name: 'TypeError', message: /outside/ });
    assert.equal(s.sendRange(batch, 1, batch.count - 1, target, 2), batch.count - 2);
  });
  const got = received(b, 8);
  s.setReading(true);
  assert.deepEqual(
    await got,
    Array.from({ length: 8 }, (_, i) => payload(i + 1, 32).toString('hex')),
  );
  assert.deepEqual(counts, [10]);
});

test('where the route refuses a run (a segment over its MTU), the datagrams go one by one', async (t) => {
  const name = `oxygso${process.pid}`;
  const made = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (made.status !== 0) {
    t.skip(`ip netns add refused: ${(made.stderr || String(made.error)).trim()}; run as root to test this`);
    return;
  }
  after(() => spawnSync('ip', ['netns', 'del', name]));
  const up = spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'mtu', '1280', 'up'], { encoding: 'utf8' });
  assert.equal(up.status, 0, up.stderr);
  const [s, r] = netns.run(`/run/netns/${name}`, () => [
    udp({ address: '127.0.0.1' }),
    udp({ address: '127.0.0.1', receiveBufferSize: 1 << 20 }),
  ]);
  const got: string[] = [];
  const all = new Promise<void>((resolve) => {
    r.onBatch((batch) => {
      for (let i = 0; i < batch.count; i++) got.push(batch.payload(i).toString('hex'));
      if (got.length === 12) resolve();
    });
  });
  const big = Array.from({ length: 4 }, (_, i) => payload(i, 1400));
  const small = Array.from({ length: 8 }, (_, i) => payload(100 + i, 100));
  const to = { address: '127.0.0.1', port: r.address().port };
  assert.equal(s.sendBatch(big.map((data) => ({ data, ...to }))), 4);
  assert.equal(s.sendBatch(small.map((data) => ({ data, ...to }))), 8);
  await all;
  assert.deepEqual(
    got,
    [...big, ...small].map((d) => d.toString('hex')),
  );
  assert.equal(s.stats().sendErrors, 0);
});
