/**
 * TUN reads into a reused slab (`reuseBuffers`): the kernel's replies to 40 echo requests of
 * different sizes, sent at once, arrive as views with the right lengths and contents, several per
 * batch, never more than `batch`; every view of a batch is a distinct region of one buffer.
 * Runs in a network namespace made by the test (root); skips, with the message, where refused.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, test } from 'node:test';
import { netns, tun } from 'native';
import { echoRequest, parseEchoReply } from './icmp.ts';

const NAME = `oxyreuse${process.pid}`;
const made = spawnSync('ip', ['netns', 'add', NAME], { encoding: 'utf8' });
const refused =
  made.status === 0 ? false : `ip netns add refused: ${(made.stderr || String(made.error)).trim()}`;
after(() => {
  if (!refused) spawnSync('ip', ['netns', 'del', NAME]);
});

test('reused read buffers: whole packets as views of one slab, batch by batch', {
  skip: refused,
}, async () => {
  const dev = netns.run(`/run/netns/${NAME}`, () =>
    tun.open('tunr0', { reuseBuffers: true, batch: 8, maxPacketSize: 1500 }),
  );
  after(() => dev.close());
  const ip = (...args: string[]) => execFileSync('ip', ['-n', NAME, ...args]);
  ip('addr', 'add', '10.1.0.1/24', 'dev', 'tunr0');
  ip('link', 'set', 'tunr0', 'up');
  const want = new Map<number, Buffer>();
  for (let seq = 0; seq < 40; seq++) want.set(seq, Buffer.alloc(10 + seq * 31, seq));
  const seen = new Map<number, boolean>();
  let batches = 0;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${seen.size} of 40 replies`)), 5000);
    dev.on('packets', (pkts) => {
      batches++;
      assert.ok(pkts.length <= 8, 'never more than a batch');
      const base = pkts[0]!.buffer;
      let end = -1;
      for (const p of pkts) {
        assert.equal(p.buffer, base, 'one slab');
        assert.ok(p.byteOffset >= end, 'views do not overlap');
        end = p.byteOffset + p.length;
        const r = parseEchoReply(p);
        if (r === null) continue; // router solicitations
        assert.deepEqual(r.payload, want.get(r.seq), `reply ${r.seq} whole`);
        seen.set(r.seq, true);
      }
      if (seen.size === 40) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  dev.write([...want].map(([seq, payload]) => echoRequest('10.1.0.2', '10.1.0.1', 7, seq, payload)));
  await done;
  assert.ok(batches >= 5, `40 replies in batches of at most 8 (${batches})`);
});
