/**
 * Malformed and hostile input on raw sockets. Each case checks the status and that the
 * connection was closed, then proves the proxy still serves a good request (curl).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  curl,
  hooksApp,
  rawConnect,
  rawExchange,
  startApp,
  startHttpUpstream,
  waitForClose,
} from '../src/testing/index.ts';

const upstream = await startHttpUpstream({ '/ok': { body: 'still serving' } });
const proxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { header_read_timeout: '500ms', max_header_size: '4KiB' } } },
});
after(() => upstream.close().then(() => proxy.stop()));
const target = `${upstream.origin}/ok`;

async function stillServes(): Promise<void> {
  const r = await curl(['-x', `http://${proxy.address()}`, target]);
  assert.equal(r.stdout, 'still serving', r.stderr);
}

const cases: [string, string, RegExp][] = [
  [
    'conflicting Content-Length',
    `POST ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    /^HTTP\/1\.1 400/,
  ],
  [
    'Content-Length with Transfer-Encoding',
    `POST ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    /^HTTP\/1\.1 400/,
  ],
  ['a garbage request line', 'HELLO THERE\r\n\r\n', /^HTTP\/1\.1 400/],
  ['a header without a colon', `GET ${target} HTTP/1.1\r\nHost x\r\n\r\n`, /^HTTP\/1\.1 400/],
  ['a bare LF in a header value', `GET ${target} HTTP/1.1\r\nHost: x\r\nX: a\nb\r\n\r\n`, /^HTTP\/1\.1 400/],
  [
    'a bad chunk size',
    `POST ${target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
    /^HTTP\/1\.1 400/,
  ],
  [
    'a head over max_header_size',
    `GET ${target} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`,
    /^HTTP\/1\.1 431/,
  ],
  [
    'a CONNECT without a port',
    'CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n',
    /^HTTP\/1\.1 400/,
  ],
  ['a CONNECT with user info', 'CONNECT u@example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400/],
  [
    'an Upgrade with a relative target',
    'GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    /^HTTP\/1\.1 400/,
  ],
];

for (const [name, bytes, status] of cases) {
  test(`${name} is refused and the connection closed`, async () => {
    const r = await rawExchange(proxy.address(), bytes);
    assert.match(r.text, status);
    assert.ok(r.closed, 'connection closed');
    await stillServes();
  });
}

test('a slow request head (slowloris) gets 408 after header_read_timeout', async () => {
  const socket = rawConnect(proxy.address(), `GET ${target} HTTP/1.1\r\nHost: x\r\n`);
  const drip = setInterval(() => socket.write('X-Drip: 1\r\n'), 100);
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const elapsed = await waitForClose(socket);
  clearInterval(drip);
  assert.match(Buffer.concat(chunks).toString(), /^HTTP\/1\.1 408/);
  assert.ok(elapsed >= 400 && elapsed < 3000, `closed after ${elapsed} ms`);
  await stillServes();
});

test('a connection that sends nothing is closed after header_read_timeout', async () => {
  const r = await rawExchange(proxy.address(), '', { timeoutMs: 4000 });
  assert.ok(r.closed);
  await stillServes();
});

test('an idle keep-alive connection is closed after idle_timeout', async () => {
  const idle = await startApp(hooksApp(), { settings: { endpoints: { main: { idle_timeout: '300ms' } } } });
  after(() => idle.stop());
  const socket = rawConnect(idle.address(), `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString()));
  const elapsed = await waitForClose(socket);
  assert.match(got, /still serving/);
  assert.ok(elapsed >= 250 && elapsed < 3000, `closed after ${elapsed} ms`);
});
