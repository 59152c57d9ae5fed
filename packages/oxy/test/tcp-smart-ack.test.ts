/**
 * One ACK packet less per connection, each way it can be saved, counted by the kernel itself
 * (`ss -ti`'s segs_in: the segments a socket received, pure ACKs included):
 *
 * - `tcp.smart_connect` (default on): a client's first bytes that are there as the reactor
 *   connects upstream carry the handshake's last ACK, so the target's socket receives its SYN
 *   and one segment with the bytes, not a separate ACK first. Made deterministic as in
 *   tcp-early.test.ts: `oxy` is stopped while the client connects and writes.
 * - `tcp_smart_accept` (default on for `http`, off for `tcp`): the ACK of a client's first bytes
 *   waits for the answer to carry it: until then the client has received the SYN-ACK only.
 * - A target that speaks first is not kept waiting for a held ACK: with no client bytes, the ACK
 *   goes at once (a held one would stall its accept for the kernel's 200 ms).
 *
 * Linux only (the addon, `ss` from iproute2).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { native } from '../src/flows/stream/native-addon.ts';
import { readBytes, waitUntil } from '../src/testing/index.ts';
import { type OxyCli, speakWhileStopped, startOxyCli, tcpEndpointLines } from './fixtures/oxy-cli.ts';

const skip = process.platform !== 'linux' || native === null ? 'needs Linux and the native addon' : false;

/** segs_in of the established IPv4 socket at local port `local` with peer port `remote`. */
function segsIn(local: number, remote: number): number {
  const out = execFileSync(
    'ss',
    ['-tinH', 'state', 'established', `( sport = :${local} and dport = :${remote} )`],
    { encoding: 'utf8' },
  );
  const m = /\bsegs_in:(\d+)/.exec(out);
  assert.ok(m, `no socket ${local} → ${remote} in: ${out}`);
  return Number(m[1]);
}

/**
 * A target that notes, at each connection's first bytes, how many segments its socket had
 * received by then, and answers `answer` to every chunk.
 */
async function countingTarget(answer = 'ok'): Promise<{ port: number; counts: number[] }> {
  const counts: number[] = [];
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    held.push(s);
    s.once('data', () => counts.push(segsIn(s.localPort as number, s.remotePort as number)));
    s.on('data', () => s.write(answer));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, counts };
}

/** What the target's socket had received at a stopped-then-resumed oxy's client's first bytes. */
async function targetSegmentsAtFirstBytes(extra: readonly string[]): Promise<number> {
  const target = await countingTarget();
  const oxy = await startOxyCli([...tcpEndpointLines(`127.0.0.1:${target.port}`), ...extra]);
  const c = await speakWhileStopped(oxy, 'first bytes');
  assert.equal((await readBytes(c, 2)).toString(), 'ok');
  c.destroy();
  await waitUntil(() => target.counts.length === 1, 'the target saw the bytes');
  return target.counts[0] as number;
}

test('smart connect: the first bytes carry the handshake ACK to the target (one segment less)', {
  skip,
  timeout: 30_000,
}, async () => {
  const smart = await targetSegmentsAtFirstBytes([]);
  const plain = await targetSegmentsAtFirstBytes(['      smart_connect: false']);
  assert.equal(plain - smart, 1, `segments at the first bytes: ${smart} with, ${plain} without`);
});

/**
 * The segments a client of `oxy`'s endpoint `name` has received just after it wrote `first`, to
 * which nothing answers yet: the SYN-ACK, and the ACK of `first` unless it is held. An ACK sent
 * at once is there when the write returns (loopback delivers it in the writer's own system
 * call); a held one only after 40 ms, so the best of five tries shows it on a loaded machine.
 */
async function clientSegmentsAfterWrite(oxy: OxyCli, name: string, first: string): Promise<number> {
  const { host, port } = oxy.address(name);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const c = net.connect(port, host);
    c.on('error', () => {});
    await once(c, 'connect');
    await new Promise<void>((r) => c.write(first, () => r()));
    best = Math.min(best, segsIn(c.localPort as number, port));
    c.destroy();
  }
  return best;
}

test('smart accept: the ACK of the first bytes waits for the answer; off by default on tcp, on by default on http', {
  skip,
  timeout: 30_000,
}, async () => {
  // A target that never answers: what the client receives is the handshake and ACKs only.
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => held.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  after(() => {
    for (const s of held) s.destroy();
    silent.close();
  });
  const t = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  const oxy = await startOxyCli([
    ...tcpEndpointLines(t),
    '    tcp_smart_accept: true',
    '  plain:',
    '    protocol: tcp',
    '    addr: "127.0.0.1:0"',
    '    tcp:',
    `      target: "${t}"`,
    '  web:',
    '    addr: "127.0.0.1:0"',
  ]);
  const smart = await clientSegmentsAfterWrite(oxy, 'l4', 'hello');
  const plain = await clientSegmentsAfterWrite(oxy, 'plain', 'hello');
  assert.deepEqual([smart, plain], [1, 2], 'client segments after its first bytes: [smart, plain]');
  // An http endpoint: the start of a request head, which its answer would acknowledge.
  assert.equal(await clientSegmentsAfterWrite(oxy, 'web', 'CONNECT 127.0.0.1:1 HTTP/1.1\r\n'), 1);
});

test('a target that speaks first gets the handshake ACK at once, not after a held ACK times out', {
  skip,
  timeout: 30_000,
}, async () => {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end('220 ready\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const oxy = await startOxyCli(tcpEndpointLines(`127.0.0.1:${(server.address() as net.AddressInfo).port}`));
  const { host, port } = oxy.address('l4');
  // A held ACK is sent after 200 ms (TCP_DELACK_MAX); a banner that comes sooner, on one of
  // three tries (a loaded machine may be slow once), was not waiting for it.
  let fastest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const c = net.connect(port, host);
    c.on('error', () => {});
    assert.equal((await readBytes(c, 11)).toString(), '220 ready\r\n');
    fastest = Math.min(fastest, performance.now() - t0);
    c.destroy();
  }
  assert.ok(fastest < 150, `the banner took ${fastest.toFixed(1)} ms at best`);
});
