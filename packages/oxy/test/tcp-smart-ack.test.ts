/**
 * One ACK packet less per connection, each way it can be saved, counted by the kernel itself
 * (`ss -ti`'s segs_in: the segments a socket received, pure ACKs included), and the bounds that
 * keep a held ACK from stalling a peer that waits for it (packages/native/src/splice-ack.c):
 *
 * - `tcp.smart_connect` (default on): a client's first bytes carry the handshake's last ACK to
 *   the target, so the target's socket receives its SYN and one segment with the bytes, not a
 *   separate ACK first. Made deterministic as in tcp-early.test.ts: `oxy` is stopped while the
 *   client connects and writes.
 * - `tcp_smart_accept` (default on): the ACK of a client's bytes waits for the answer to carry
 *   it: until then the client has received the SYN-ACK only. A `tcp` endpoint whose connections
 *   Node accepts (a PROXY protocol endpoint) acknowledges at once.
 * - The bounds: an idle proxy sends a held ACK within a millisecond or two (OXY_ACK_IDLE_MS), so
 *   a Nagle client's second write and a target that speaks first are not kept waiting for the
 *   kernel's 40 or 200 ms; an endpoint whose targets speak first stops holding the handshake's
 *   ACK after two holds that went without client bytes. The segment counts run with both bounds
 *   at a minute, so that what they count does not depend on how fast `ss` starts.
 *
 * Linux only (the addon, `ss` from iproute2).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, test } from 'node:test';
import { native } from '../src/flows/stream/native-addon.ts';
import { readBytes, waitUntil } from '../src/testing/index.ts';
import { type OxyCli, speakWhileStopped, startOxyCli, tcpEndpointLines } from './fixtures/oxy-cli.ts';

const skip = process.platform !== 'linux' || native === null ? 'needs Linux and the native addon' : false;

/** The bounds at a minute: a held ACK goes only with a segment that carries it. */
const HOLD_LONG = { OXY_ACK_HOLD_MS: '60000', OXY_ACK_IDLE_MS: '60000' };

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
 * What the target's socket had received at the first bytes of a client that speaks 50 ms after
 * its connection (a `tcp` endpoint's) or its CONNECT's 2xx (an `http` endpoint's), the bounds at
 * a minute so that the handshake's ACK is still held then.
 */
async function targetSegmentsAtLateBytes(endpoint: 'tcp' | 'http', smart: boolean): Promise<number> {
  const target = await countingTarget();
  const authority = `127.0.0.1:${target.port}`;
  const lines =
    endpoint === 'tcp'
      ? [...tcpEndpointLines(authority), ...(smart ? [] : ['      smart_connect: false'])]
      : ['  l4:', '    addr: "127.0.0.1:0"', ...(smart ? [] : ['    tunnel_smart_connect: false'])];
  const oxy = await startOxyCli(lines, HOLD_LONG);
  const { host, port } = oxy.address('l4');
  const c = net.connect(port, host);
  c.on('error', () => {});
  await once(c, 'connect');
  if (endpoint === 'http') {
    c.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const ok = 'HTTP/1.1 200 Connection Established\r\n\r\n';
    assert.equal((await readBytes(c, ok.length)).toString(), ok);
  }
  await new Promise((r) => setTimeout(r, 50));
  c.write('late bytes');
  assert.equal((await readBytes(c, 2)).toString(), 'ok');
  c.destroy();
  await waitUntil(() => target.counts.length === 1, 'the target saw the bytes');
  return target.counts[0] as number;
}

for (const endpoint of ['tcp', 'http'] as const) {
  test(`smart connect, ${endpoint} endpoint: bytes that come after the connect carry the handshake ACK too`, {
    skip,
    timeout: 30_000,
  }, async () => {
    const smart = await targetSegmentsAtLateBytes(endpoint, true);
    const plain = await targetSegmentsAtLateBytes(endpoint, false);
    assert.equal(plain - smart, 1, `segments at the first bytes: ${smart} with, ${plain} without`);
  });
}

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

/** A target that accepts and never answers: its clients receive the handshake and ACKs only. */
async function silentTarget(): Promise<string> {
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => held.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  after(() => {
    for (const s of held) s.destroy();
    silent.close();
  });
  return `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
}

test('smart accept: the ACK of the first bytes waits for the answer; on by default, acknowledged at once where Node accepts', {
  skip,
  timeout: 30_000,
}, async () => {
  const t = await silentTarget();
  const oxy = await startOxyCli(
    [
      ...tcpEndpointLines(t),
      '  plain:',
      '    protocol: tcp',
      '    addr: "127.0.0.1:0"',
      '    tcp_smart_accept: false',
      '    tcp:',
      `      target: "${t}"`,
      // PROXY protocol: Node accepts and reads the header, so the hold would have no bound.
      '  pp:',
      '    protocol: tcp',
      '    addr: "127.0.0.1:0"',
      '    proxy_protocol:',
      '      enabled: true',
      '    tcp:',
      `      target: "${t}"`,
      '  web:',
      '    addr: "127.0.0.1:0"',
    ],
    HOLD_LONG,
  );
  const smart = await clientSegmentsAfterWrite(oxy, 'l4', 'hello');
  const plain = await clientSegmentsAfterWrite(oxy, 'plain', 'hello');
  const pp = await clientSegmentsAfterWrite(oxy, 'pp', 'PROXY TCP4 127.0.0.1 ');
  assert.deepEqual(
    [smart, plain, pp],
    [1, 2, 2],
    'client segments after its first bytes: [smart, plain, pp]',
  );
  // An http endpoint: the start of a request head, which its answer would acknowledge.
  assert.equal(await clientSegmentsAfterWrite(oxy, 'web', 'CONNECT 127.0.0.1:1 HTTP/1.1\r\n'), 1);
});

test("a Nagle client's second write is not held for the kernel's 40 ms by the ACK its first one waits for", {
  skip,
  timeout: 30_000,
}, async () => {
  // The target answers once it has both writes; the client waits for the ACK of the first
  // before its kernel sends the second (Nagle's algorithm, two small writes).
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let got = '';
    s.on('data', (d) => {
      got += d.toString();
      if (got === 'onetwo') s.end('done');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const oxy = await startOxyCli(tcpEndpointLines(`127.0.0.1:${(server.address() as net.AddressInfo).port}`));
  const { host, port } = oxy.address('l4');
  let fastest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const c = net.connect({ port, host, noDelay: false });
    c.on('error', () => {});
    await once(c, 'connect');
    const t0 = performance.now();
    c.write('one');
    c.write('two');
    assert.equal((await readBytes(c, 4)).toString(), 'done');
    fastest = Math.min(fastest, performance.now() - t0);
    c.destroy();
  }
  assert.ok(fastest < 25, `the answer took ${fastest.toFixed(1)} ms at best`);
});

/** ms from connecting to `oxy`'s endpoint `l4` to its target's banner, each of `n` connections. */
async function bannerTimes(oxy: OxyCli, n: number): Promise<number[]> {
  const { host, port } = oxy.address('l4');
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const c = net.connect(port, host);
    c.on('error', () => {});
    assert.equal((await readBytes(c, 11)).toString(), '220 ready\r\n');
    times.push(performance.now() - t0);
    c.destroy();
  }
  return times;
}

/** A target that speaks first, as SMTP and SSH servers do. */
async function bannerTarget(): Promise<string> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end('220 ready\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

test('a target that speaks first is not kept waiting for the handshake ACK', {
  skip,
  timeout: 30_000,
}, async () => {
  // Held alone, the ACK would go after the kernel's 200 ms (TCP_DELACK_MAX); an idle proxy lets
  // it go within about a millisecond. The first two connections are held (the third would not
  // be: the next test); the faster of them, as a loaded machine may be slow once.
  const oxy = await startOxyCli(tcpEndpointLines(await bannerTarget()), { OXY_ACK_HOLD_MS: '60000' });
  const [first, second] = await bannerTimes(oxy, 2);
  const fastest = Math.min(first!, second!);
  assert.ok(fastest < 100, `the banner took ${fastest.toFixed(1)} ms at best`);
});

test('an endpoint whose targets speak first stops holding the handshake ACK after holds without client bytes', {
  skip,
  timeout: 30_000,
}, async () => {
  // Only the hold's own bound (120 ms, under the kernel's 200) ends a hold here: the first
  // connections wait for it, the later ones get the ACK at once. Two misses teach the listener;
  // one more may go by while the addon takes the listening socket over from Node at start (its
  // tunnels learn apart from the listener's).
  const oxy = await startOxyCli(tcpEndpointLines(await bannerTarget()), {
    OXY_ACK_HOLD_MS: '120',
    OXY_ACK_IDLE_MS: '60000',
  });
  const times = await bannerTimes(oxy, 6);
  const shown = times.map((ms) => ms.toFixed(1)).join(', ');
  assert.ok(times[0]! >= 100, `the first waited for the bound: ${shown} ms`);
  assert.ok(times[4]! < 80 && times[5]! < 80, `the last ones did not: ${shown} ms`);
});

/** ms at best (of 3 fresh connections to `port`) from a Nagle client's first write of `parts` to the answer's `end`. */
async function answerTime(port: number, parts: readonly [string, string], end: string): Promise<number> {
  let fastest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const c = net.connect({ port, host: '127.0.0.1', noDelay: false });
    c.on('error', () => {});
    await once(c, 'connect');
    const t0 = performance.now();
    let got = '';
    const answered = new Promise<void>((resolve, reject) => {
      c.on('data', (d) => {
        got += d.toString();
        if (got.endsWith(end)) resolve();
      });
      c.once('close', () => reject(new Error(`closed after: ${got}`)));
    });
    // The second write waits in the client's kernel until the first is acknowledged.
    c.write(parts[0]);
    c.write(parts[1]);
    await answered;
    fastest = Math.min(fastest, performance.now() - t0);
    c.destroy();
  }
  return fastest;
}

for (const [engine, env] of [
  ['the native engine', {}],
  ['the JS engine', { OXY_NATIVE_H1: '0' }],
] as const) {
  test(`an http endpoint (${engine}): a Nagle client's body, or the rest of its head, is not held 40 ms for an ACK`, {
    skip,
    timeout: 30_000,
  }, async () => {
    const upstream = http.createServer((req, res) => {
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
      });
      req.on('end', () => res.end(`got ${n}`));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    after(() => upstream.close());
    const target = `127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
    const oxy = await startOxyCli(['  web:', '    addr: "127.0.0.1:0"'], env);
    const { port } = oxy.address('web');
    const line = `POST http://${target}/ HTTP/1.1\r\nHost: ${target}\r\n`;
    const rest = 'Content-Length: 5\r\nConnection: close\r\n\r\n';
    const body = await answerTime(port, [line + rest, 'hello'], 'got 5');
    const head = await answerTime(port, [line, `${rest}hello`], 'got 5');
    assert.ok(
      body < 25 && head < 25,
      `answered in ${body.toFixed(1)} ms (body apart), ${head.toFixed(1)} ms (head cut)`,
    );
  });
}
