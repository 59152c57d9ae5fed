/**
 * The native HTTP/1.1 forward engine (`onramps/http1/native-engine.ts`, packages/native/src/h1.c)
 * against the JS engine, in one process: two proxies with the same app and settings, one with
 * the engine on (`OXY_NATIVE_H1=1`) and one with it off. Real sockets: raw clients, a raw
 * upstream that writes exact bytes and records what it receives, a node:http upstream. What
 * reaches the upstream, what reaches the client, the audit records and the metrics must be the
 * same; keep-alive reuse, every response framing, large bodies both ways with a slow reader,
 * upstream failures (refused, reset mid-body), hand-backs, timeouts and a blocked target.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { nativeH1Stats } from '../src/onramps/http1/native-engine.ts';
import { reactorConnectStats } from '../src/onramps/http1/reactor-connect.ts';
import { captureTelemetry, hooksApp, startApp, startHttpUpstream, waitUntil } from '../src/testing/index.ts';
import { expectBody, type RawResponse, rawClient, rawUpstream } from './fixtures/raw-http.ts';

const BIG = 8 << 20;
const bigBody = Buffer.alloc(BIG, 'x');
for (let i = 0; i < BIG; i += 4096) bigBody[i] = i & 0xff;
const up = await rawUpstream({
  '/len': (s, head) => {
    const t = head.split(' ')[1] ?? '';
    s.write(
      `HTTP/1.1 200 OK\r\ncontent-length: ${t.length}\r\nx-up: 1\r\nConnection: x-drop\r\nx-drop: 1\r\n\r\n${t}`,
    );
  },
  '/chunked': (s) => {
    s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n');
    setTimeout(() => s.write('6\r\n world\r\n0\r\n\r\n'), 10);
  },
  '/close': (s) => {
    s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nbody ');
    setTimeout(() => s.end('until close'), 10);
  },
  '/head': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n'),
  '/204': (s) => s.write('HTTP/1.1 204 No Content\r\nx-up: 204\r\n\r\n'),
  '/304': (s) => s.write('HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 50\r\n\r\n'),
  '/big': (s) => {
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${BIG}\r\n\r\n`);
    s.write(bigBody);
  },
  '/reset': (s) => {
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial');
    setTimeout(() => s.resetAndDestroy(), 20);
  },
  '/silent': () => {},
});
// Its handlers run once the body was read whole (the fixture records it).
const node = await startHttpUpstream({
  '/upload': (_req, res) => {
    const body = node.requests.at(-1)?.body ?? Buffer.alloc(0);
    res.end(`${body.length} ${createHash('sha256').update(body).digest('hex')}`);
  },
});
// A port nothing listens on: connections to it are refused.
const refused = net.createServer().listen(0, '127.0.0.1');
await once(refused, 'listening');
const refusedPort = (refused.address() as net.AddressInfo).port;
await new Promise<void>((r) => refused.close(() => r()));

const settings = {
  endpoints: { main: { header_read_timeout: '300ms', idle_timeout: '400ms' } },
  egress: { blocked_cidrs: ['127.0.0.2/32'], response_timeout: '500ms' },
};
async function proxy(on: boolean) {
  process.env.OXY_NATIVE_H1 = on ? '1' : '0';
  const app = await startApp(hooksApp(), { settings });
  delete process.env.OXY_NATIVE_H1;
  return app;
}
const native = await proxy(true);
const js = await proxy(false);
after(async () => {
  // The later one first: each app's leak check sees what was opened after it started.
  await js.stop();
  await native.stop();
  await up.close();
  await node.close();
});

/** What a client sees of a response, without what may differ between engines (chunk sizes). */
function seen(r: RawResponse) {
  return { status: r.status, head: r.head, body: r.body.toString('latin1'), framing: r.framing };
}

/** Sends `requests` on one connection to each proxy; returns the responses and what the upstream got. */
async function both(requests: string[], head = false) {
  const out: { responses: ReturnType<typeof seen>[]; upstream: string[] }[] = [];
  for (const app of [native, js]) {
    const c = await rawClient(app.proxy.address());
    const from = up.heads.length;
    const responses = [];
    for (const r of requests) {
      await c.write(r);
      responses.push(seen(await c.response({ head: head && r.startsWith('HEAD') })));
    }
    c.destroy();
    out.push({ responses, upstream: up.heads.slice(from) });
  }
  return out as [(typeof out)[0], (typeof out)[0]];
}

test('the upstream receives the same bytes from both engines, and the client the same response', async () => {
  const p = up.authority;
  const before = nativeH1Stats.requests;
  const [n, j] = await both([
    `GET http://${p}/len?a=1#frag HTTP/1.1\r\nHost: ${p}\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n`,
    `GET http://${p.toUpperCase()}/len HTTP/1.1\r\nHOST: other\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n` +
      'Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nKeep-Alive: 300\r\nTE: trailers\r\n' +
      'Trailer: x\r\nX-Dup: 1\r\nX-Dup: 2\r\nCookie: a=1\r\nx-value:   padded  \r\n\r\n',
    `GET http://${p}?q HTTP/1.1\r\nHost: ${p}\r\n\r\n`,
    `DELETE http://${p}/len/x HTTP/1.1\r\nHost: ${p}\r\nContent-Length: 0\r\n\r\n`,
    `POST http://${p}/len HTTP/1.1\r\nHost: ${p}\r\ncontent-length: 005\r\nX: y\r\n\r\nhello`,
  ]);
  assert.deepEqual(n.upstream, j.upstream);
  assert.deepEqual(n.responses, j.responses);
  // quiet mode: the count comes with the next batch, within a millisecond
  await waitUntil(() => nativeH1Stats.requests - before >= 5, 'the count');
  assert.equal(nativeH1Stats.requests - before, 5, 'the native engine served them');
});

test('keep-alive: one pooled upstream connection; every framing relayed as the JS engine relays it', async () => {
  const accepted = up.count.accepted;
  const before = nativeH1Stats.requests;
  const c = await rawClient(native.proxy.address());
  for (let i = 0; i < 20; i++) {
    await c.write(up.get(`/len?${i}`));
    await expectBody(c, `/len?${i}`);
  }
  assert.ok(up.count.accepted - accepted <= 1, 'one upstream connection at most (it may be pooled already)');
  await waitUntil(() => nativeH1Stats.requests - before >= 20, 'the count');
  assert.equal(nativeH1Stats.requests - before, 20);
  const [n, j] = await both(
    ['/chunked', '/close', '/204', '/304', '/len?after']
      .map((x) => up.get(x))
      .concat(up.get('/head').replace('GET', 'HEAD')),
    true,
  );
  assert.deepEqual(n.responses, j.responses);
  assert.equal(n.responses[0]?.body, 'hello world');
  assert.equal(n.responses[1]?.body, 'body until close');
});

test('large bodies both ways with backpressure: a slow reader gets 8 MiB intact; a 4 MiB upload arrives whole', async () => {
  const c = await rawClient(native.proxy.address());
  c.socket.pause();
  await c.write(up.get('/big'));
  await new Promise((r) => setTimeout(r, 300)); // the proxy cannot write it all: it must wait
  c.socket.resume();
  const r = await c.response({ timeoutMs: 20000 });
  assert.equal(r.body.length, BIG);
  assert.ok(r.body.equals(bigBody));
  const upload = Buffer.alloc(4 << 20, 'u');
  const u = await rawClient(native.proxy.address());
  await u.write(
    `POST ${node.origin}/upload HTTP/1.1\r\nHost: ${node.authority}\r\nContent-Length: ${upload.length}\r\n\r\n`,
  );
  await u.write(upload);
  await expectBody(u, `${upload.length} ${createHash('sha256').update(upload).digest('hex')}`);
});

test('upstream failures: refused is the same 502 as the JS engine; a reset mid-body closes the client', async () => {
  const target = `GET http://127.0.0.1:${refusedPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${refusedPort}\r\n\r\n`;
  const [n, j] = await both([target, up.get('/len?next')]);
  assert.equal(n.responses[0]?.status, 502);
  assert.deepEqual(n.responses, j.responses);
  const c = await rawClient(native.proxy.address());
  await c.write(up.get('/reset'));
  const rest = (await c.closed(3000)).toString('latin1');
  assert.match(rest, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(rest.endsWith('partial'));
});

test('a blocked target is a 403; a response that does not come is a 504; both as the JS engine answers', async () => {
  const [n, j] = await both([
    'GET http://127.0.0.2:81/ HTTP/1.1\r\nHost: 127.0.0.2:81\r\n\r\n',
    up.get('/silent'),
  ]);
  assert.equal(n.responses[0]?.status, 403);
  assert.equal(n.responses[1]?.status, 504);
  assert.deepEqual(n.responses, j.responses);
});

test('hand-back: CONNECT, HTTP/1.0, a chunked upload and a malformed head go to the JS engine', async () => {
  const before = nativeH1Stats.handedBack;
  const c = await rawClient(native.proxy.address());
  await c.write(up.get('/len?first'));
  await expectBody(c, '/len?first');
  await c.write(
    `POST ${node.origin}/upload HTTP/1.1\r\nHost: ${node.authority}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
  );
  await expectBody(c, `3 ${createHash('sha256').update('abc').digest('hex')}`);
  await c.write(up.get('/len?after-hand-back'));
  await expectBody(c, '/len?after-hand-back');
  const old = await rawClient(native.proxy.address());
  await old.write(`GET ${up.origin}/len?old HTTP/1.0\r\n\r\n`);
  await expectBody(old, '/len?old');
  const bad = await rawClient(native.proxy.address());
  await bad.write(`GET ${up.origin}/ HTTP/1.1\r\nBad Name: x\r\n\r\n`);
  assert.equal((await bad.response()).status, 400);
  // A CONNECT as a connection's first request is read by the reactor thread (connect mode) and
  // never reaches the engine; after a GET the engine holds the connection and hands it back.
  const tunnel = await rawClient(native.proxy.address());
  await tunnel.write(up.get('/len?before-connect'));
  await expectBody(tunnel, '/len?before-connect');
  await tunnel.write(`CONNECT ${up.authority} HTTP/1.1\r\nHost: ${up.authority}\r\n\r\n`);
  assert.equal((await tunnel.response({ head: true })).status, 200);
  tunnel.destroy();
  assert.equal(nativeH1Stats.handedBack - before, 4);
});

test('timeouts: a partial head gets 408 after header_read_timeout; an idle connection closes after idle_timeout', async () => {
  const partial = await rawClient(native.proxy.address());
  await partial.write(`GET ${up.origin}/len HTTP/1.1\r\nHost: x\r\n`);
  const r = await partial.response({ timeoutMs: 3000 });
  assert.equal(r.status, 408);
  const idle = await rawClient(native.proxy.address());
  await idle.write(up.get('/len?idle'));
  await expectBody(idle, '/len?idle');
  const t0 = performance.now();
  await idle.closed(3000);
  assert.ok(performance.now() - t0 >= 300, 'not before idle_timeout');
});

test('audit records and metrics: the same for the same requests, engine on or off', async () => {
  const tele = captureTelemetry({ verbosity: 'INFO' });
  try {
    const requests = [
      up.get('/len?audit'),
      up.get('/chunked'),
      `GET http://127.0.0.1:${refusedPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${refusedPort}\r\n\r\n`,
      'GET http://127.0.0.2:81/ HTTP/1.1\r\nHost: 127.0.0.2:81\r\n\r\n',
    ];
    const records = [];
    for (const app of [native, js]) {
      const from = app.auditRecords().length;
      const total0 = (await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0;
      const failed0 = (await tele.metricValue('http_requests_failed_total')) ?? 0;
      const c = await rawClient(app.proxy.address());
      for (const r of requests) {
        await c.write(r);
        await c.response();
      }
      c.destroy();
      await waitUntil(() => app.auditRecords().length - from >= requests.length, 'the records');
      const total = ((await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0) - total0;
      const failed = ((await tele.metricValue('http_requests_failed_total')) ?? 0) - failed0;
      const mine = app
        .auditRecords()
        .slice(from)
        .map((a) => {
          const { request_id, conn_id, duration_ms, client, peer, ...rest } = a as unknown as Record<
            string,
            unknown
          >;
          return rest;
        });
      records.push({ mine, total, failed });
    }
    assert.deepEqual(records[0], records[1]);
    assert.equal(records[0]?.total, 4);
    assert.equal(records[0]?.failed, 2);
  } finally {
    tele.stop();
  }
});

test('a connection the reactor thread accepted and handed back (adoptConnection) is served by the engine, the bytes it read first', async () => {
  // The reactor reads a connection's first bytes looking for a CONNECT; a GET split across two
  // writes is handed back with its first part, which the engine must serve before its own reads.
  const before = nativeH1Stats.served;
  const handedBefore = reactorConnectStats.handedBack;
  const request = Buffer.from(up.get('/len?handed-back'));
  const client = net.connect(native.proxy.address().port, '127.0.0.1');
  await once(client, 'connect');
  let got = '';
  client.on('data', (d: Buffer) => {
    got += d.toString('latin1');
  });
  client.write(request.subarray(0, 10));
  await new Promise((r) => setTimeout(r, 50));
  client.write(request.subarray(10));
  await waitUntil(() => got.endsWith('/len?handed-back'), 'the response');
  assert.match(got, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(reactorConnectStats.handedBack - handedBefore, 1, 'the reactor handed it back');
  assert.equal(nativeH1Stats.served - before, 1, 'the native engine took it');
  client.destroy();
});

test('the close hook counts the bytes and requests of a connection the engine served, as the JS engine does', async () => {
  // No request-end hook, no audit: the engine is quiet, its requests on pooled upstream
  // connections counted in C and given to the connection when it leaves the addon.
  type Stats = { bytesIn: number; bytesOut: number; requests: number };
  const stats: Stats[] = [];
  const hook = hooksApp({ ingress: { handleConnectionClose: (s) => void stats.push(s) } });
  const tele = captureTelemetry({ verbosity: 'INFO' });
  for (const on of [true, false]) {
    process.env.OXY_NATIVE_H1 = on ? '1' : '0';
    const app = await startApp(hook, { settings });
    delete process.env.OXY_NATIVE_H1;
    const before = nativeH1Stats.requests;
    const total0 = (await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0;
    const c = await rawClient(app.proxy.address());
    for (let i = 0; i < 3; i++) {
      await c.write(up.get(`/len?counted${i}`));
      await expectBody(c, `/len?counted${i}`);
    }
    const total = async () =>
      ((await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0) - total0;
    for (let i = 0; i < 100 && (await total()) < 3; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(await total(), 3, 'the requests metric');
    c.destroy();
    await waitUntil(() => stats.length === (on ? 1 : 2), 'the close hook');
    assert.equal(nativeH1Stats.requests - before, on ? 3 : 0, on ? 'served by the engine' : 'served by JS');
    await app.stop();
  }
  tele.stop();
  const [n, j] = stats as [Stats, Stats];
  assert.ok(n.bytesIn > 0 && n.bytesOut > 0, JSON.stringify(n));
  assert.equal(n.bytesIn, j.bytesIn);
  assert.equal(n.bytesOut, j.bytesOut);
  assert.equal(n.requests, 3);
  assert.equal(j.requests, 3);
});

test('quiet mode: a request that fails on a pooled connection is still counted once, as by the JS engine', async () => {
  // No request-end hook, no audit: requests that end well are counted in C; the one cut by
  // the upstream's reset comes as its own event. Both engines count three requests.
  const requests: number[] = [];
  const hook = hooksApp({ ingress: { handleConnectionClose: (s) => void requests.push(s.requests) } });
  const tele = captureTelemetry({ verbosity: 'INFO' });
  const totals: number[] = [];
  for (const on of [true, false]) {
    process.env.OXY_NATIVE_H1 = on ? '1' : '0';
    const app = await startApp(hook, { settings });
    delete process.env.OXY_NATIVE_H1;
    const total0 = (await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0;
    const served = nativeH1Stats.requests;
    const c = await rawClient(app.proxy.address());
    for (const path of ['/len?q1', '/len?q2']) {
      await c.write(up.get(path));
      await expectBody(c, path);
    }
    await c.write(up.get('/reset'));
    assert.ok((await c.closed(3000)).toString('latin1').endsWith('partial'));
    await waitUntil(() => requests.length === totals.length + 1, 'the close hook');
    totals.push(((await tele.metricValue('http_requests_total', { kind: 'forward' })) ?? 0) - total0);
    // the engine's own count: the two that ended well (the reset is a failure)
    assert.equal(nativeH1Stats.requests - served, on ? 2 : 0);
    await app.stop();
  }
  tele.stop();
  assert.deepEqual(requests, [3, 3]);
  assert.deepEqual(totals, [3, 3]);
});
