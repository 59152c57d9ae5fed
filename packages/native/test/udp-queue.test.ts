/**
 * UdpSocket's send queue on a socket the kernel really refuses (EAGAIN): loopback never does
 * (a datagram leaves the send buffer as soon as it is delivered), so the test makes a network
 * namespace (root) whose loopback is throttled by a token bucket (tc tbf); datagrams then wait in
 * the qdisc holding the small send buffer. What the socket accepts arrives, in order; what did
 * not fit in the bounded queue is dropped and counted. Skips where namespaces are refused.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { netns, UdpSocket } from 'native';

const NAME = `oxyudp${process.pid}`;
const made = spawnSync('ip', ['netns', 'add', NAME], { encoding: 'utf8' });
let refused: string | false =
  made.status === 0 ? false : `ip netns add refused: ${(made.stderr || String(made.error)).trim()}`;
if (!refused) {
  try {
    execFileSync('ip', ['-n', NAME, 'link', 'set', 'lo', 'up']);
    // 2 Mbit/s: a 1,000-byte datagram every 4 ms
    execFileSync('tc', [
      '-n',
      NAME,
      'qdisc',
      'add',
      'dev',
      'lo',
      'root',
      'tbf',
      'rate',
      '2mbit',
      'burst',
      '3000',
      'limit',
      '1000000',
    ]);
  } catch (e) {
    refused = `tc refused: ${(e as Error).message}`;
  }
}
after(() => {
  if (made.status === 0) spawnSync('ip', ['netns', 'del', NAME]);
});

test('EAGAIN: sends queue in order up to maxQueue, the rest are dropped and counted, the queue drains', {
  skip: refused,
}, async () => {
  const [sender, receiver] = netns.run(`/run/netns/${NAME}`, () => [
    UdpSocket.bind({ address: '127.0.0.1', sendBufferSize: 4096, maxQueue: 30 }),
    UdpSocket.bind({ address: '127.0.0.1', receiveBufferSize: 1 << 20 }),
  ]);
  after(() => {
    sender.close();
    receiver.close();
  });
  const got: number[] = [];
  receiver.onBatch((b) => {
    for (let i = 0; i < b.count; i++) got.push(b.payload(i).readUInt32BE(0));
  });
  const port = receiver.address().port;
  const accepted: number[] = [];
  const results: Record<string, number> = {};
  for (let i = 0; i < 100; i++) {
    const d = Buffer.alloc(1000);
    d.writeUInt32BE(i, 0);
    const r = sender.send(d, port, '127.0.0.1');
    results[r] = (results[r] ?? 0) + 1;
    if (r === 'sent' || r === 'queued') accepted.push(i);
  }
  assert.ok((results.queued ?? 0) > 0, `some had to wait: ${JSON.stringify(results)}`);
  assert.ok((results.dropped ?? 0) > 0, `some were dropped: ${JSON.stringify(results)}`);
  assert.equal(results.failed, undefined);
  const mid = sender.stats();
  assert.equal(mid.dropped, results.dropped);
  assert.ok(mid.queued > 0 && mid.queued <= 30);
  // a batch behind a queue waits its turn too
  const more = [100, 101].map((n) => {
    const d = Buffer.alloc(1000);
    d.writeUInt32BE(n, 0);
    return { data: d, address: '127.0.0.1', port };
  });
  const n = sender.sendBatch(more);
  for (let k = 0; k < n; k++) accepted.push(100 + k);
  const until = Date.now() + 10_000;
  while (got.length < accepted.length && Date.now() < until) await sleep(20);
  assert.deepEqual(got, accepted);
  const end = sender.stats();
  assert.equal(end.queued, 0);
  assert.equal(end.sent, accepted.length);
  assert.equal(end.dropped, 102 - accepted.length);
});
