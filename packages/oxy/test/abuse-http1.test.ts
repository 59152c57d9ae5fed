/**
 * Abuse suite, HTTP/1.1 (issue 19): raw sockets that hold the proxy's state (heads that never
 * finish, bodies that stop, oversized heads, silent connections, a flood of half-open
 * connections). Each attack is bounded in time (a few seconds) and asserts bounded descriptors
 * and memory, upstream connections released, and a normal client served while it runs.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { hooksApp, startApp, startHttpUpstream, startTcpServer, waitUntil } from '../src/testing/index.ts';
import { fdCount, fdsBackTo, sampler, servedThroughout } from './fixtures/abuse.ts';

const upstream = await startHttpUpstream({ 'GET /hello': { status: 200, body: 'hello' } });
// Reads requests and never answers.
const silent = await startTcpServer((s) => s.resume());
const oxy = await startApp(hooksApp(), {
  settings: {
    endpoints: {
      main: { header_read_timeout: '600ms', body_read_timeout: '500ms', max_header_size: '8KiB' },
    },
  },
});
after(async () => {
  await Promise.all([upstream.close(), silent.close()]);
  await oxy.stop();
});
const hello = `${upstream.origin}/hello`;

/** Opens `n` raw connections to the proxy, each sending `bytes`; resolves with them. */
async function open(n: number, bytes: string): Promise<net.Socket[]> {
  const { host, port } = oxy.proxy.address();
  return Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.connect(port, host);
      s.on('error', () => {});
      after(() => s.destroy());
      await once(s, 'connect');
      if (bytes !== '') s.write(bytes);
      s.resume();
      return s;
    }),
  );
}

function allClosed(sockets: readonly net.Socket[]): boolean {
  return sockets.every((s) => s.destroyed || s.readableEnded);
}

test('slowloris: silent connections and heads that never finish are closed after header_read_timeout', async () => {
  const baseline = fdCount();
  const s = sampler();
  await servedThroughout(oxy, hello, 'hello', async () => {
    const silentOnes = await open(100, '');
    const partial = await open(100, `GET ${hello} HTTP/1.1\r\nHost: ${upstream.authority}\r\nX-Slow: `);
    const started = performance.now();
    await waitUntil(() => allClosed(silentOnes) && allClosed(partial), 'every slow connection closed', 4000);
    assert.ok(performance.now() - started < 3000, 'closed within the header deadline and a sweep');
  });
  const peaks = s.stop();
  assert.ok(peaks.fdPeak < baseline + 450, `descriptors peaked at ${peaks.fdPeak} (baseline ${baseline})`);
  await fdsBackTo(baseline);
});

test('stalled bodies: every POST gets 408 after body_read_timeout and its upstream connection is released', async () => {
  const baseline = fdCount();
  const before = oxy.auditRecords().length;
  const n = 50;
  await servedThroughout(oxy, hello, 'hello', async () => {
    const head = `POST http://${silent.authority}/stall HTTP/1.1\r\nHost: ${silent.authority}\r\nContent-Length: 100000\r\n\r\nsome`;
    const sockets = await open(n, head);
    const answers = sockets.map(
      (s) =>
        new Promise<string>((resolve) => {
          let got = '';
          s.on('data', (d: Buffer) => {
            got += d.toString('latin1');
          });
          s.on('close', () => resolve(got));
        }),
    );
    const texts = await Promise.all(answers);
    for (const t of texts) assert.match(t, /^HTTP\/1\.1 408 /);
  });
  const records = await oxy.waitForAudit(before + n);
  assert.equal(records.slice(before).filter((r) => r.close_reason === 'OXY_ERR_BODY_TIMEOUT').length, n);
  await waitUntil(() => silent.open() === 0, 'every upstream connection released');
  await fdsBackTo(baseline);
});

test('oversized heads: 431 and closed, nothing forwarded, memory flat', async () => {
  const baseline = fdCount();
  const before = upstream.requests.length;
  const rss0 = process.memoryUsage().rss;
  await servedThroughout(oxy, hello, 'hello', async () => {
    const big = `GET ${hello} HTTP/1.1\r\nHost: ${upstream.authority}\r\n${'X-Pad: '.concat('p'.repeat(1000), '\r\n').repeat(40)}\r\n`;
    const sockets = await open(50, big);
    const answers = await Promise.all(
      sockets.map(
        (s) =>
          new Promise<string>((resolve) => {
            let got = '';
            s.on('data', (d: Buffer) => {
              got += d.toString('latin1');
            });
            s.on('close', () => resolve(got));
          }),
      ),
    );
    for (const a of answers) assert.match(a, /^HTTP\/1\.1 431 /);
  });
  assert.ok(
    upstream.requests.slice(before).every((r) => r.headers['x-pad'] === undefined),
    'no oversized head forwarded',
  );
  assert.ok(process.memoryUsage().rss - rss0 < 100 * 1024 * 1024);
  await fdsBackTo(baseline);
});
