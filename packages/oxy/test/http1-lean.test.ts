/**
 * The lean HTTP/1.1 on-ramp (`onramps/http1/lean.ts`) on raw sockets, both ends written by hand:
 * keep-alive with every kind of response framing, pipelining split at odd byte boundaries,
 * `Connection: close`, what once went to `node:http` mid-connection and is now served by the
 * same engine (bodies, HTTP/1.0, origin-form, `Expect`, chunked uploads, `Upgrade`), CONNECT
 * with early data, and
 * the hook order and audit record of a lean request. Malformed input, timeouts, client
 * departures, draining and HTTP/2 prior knowledge: `http1-lean-edges.test.ts`; failing
 * upstreams and egress hooks, deep pipelining: `http1-lean-failures.test.ts`.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  HOOK_ORDERS,
  hooksApp,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  tracingHooks,
} from '../src/testing/index.ts';
import { expectBody, rawClient, rawUpstream, targetOf } from './fixtures/raw-http.ts';

const up = await rawUpstream({
  '/len': (s, head) => {
    const body = targetOf(head);
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nx-up: 1\r\n\r\n${body}`);
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
  '/304': (s) => s.write('HTTP/1.1 304 Not Modified\r\netag: "v1"\r\n\r\n'),
  '/304-length': (s) => s.write('HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n'),
  '/slow': (s, head) => {
    const body = targetOf(head);
    setTimeout(() => s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`), 150);
  },
  '/headers': (s, head) => s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${head.length}\r\n\r\n${head}`),
});
// For what node:http forwards after the hand-over: request bodies, Upgrade.
const node = await startHttpUpstream(
  {
    '/echo': (req, res) => {
      const seen = node.requests.at(-1);
      res.setHeader('x-method', req.method ?? '');
      res.end(`${req.method} ${seen?.body.toString('latin1') ?? ''}`);
    },
    '/plain': { body: 'plain' },
  },
  '127.0.0.1',
  {
    upgrade(req, socket, head) {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${req.headers.upgrade}\r\n\r\n`,
      );
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
    },
  },
);
const echo = await startTcpEcho();
const app = await startApp(hooksApp(), { settings: { endpoints: { main: { max_header_size: '4KiB' } } } });
const addr = app.proxy.address();
after(async () => {
  await up.close();
  await node.close();
  await echo.close();
  await app.stop();
});

const get = (path: string, extra = '', method = 'GET'): string =>
  `${method} ${up.origin}${path} HTTP/1.1\r\nHost: ${up.authority}\r\n${extra}\r\n`;

/** A response the lean on-ramp wrote: node:http adds `Connection: keep-alive` and `Keep-Alive`. */
function assertLean(r: { headers: ReadonlyMap<string, string> }): void {
  assert.equal(r.headers.get('keep-alive'), undefined, 'answered by the lean on-ramp');
  assert.equal(r.headers.get('connection'), undefined, 'answered by the lean on-ramp');
}

test('keep-alive: every kind of response framing, many requests on one connection', async () => {
  const c = await rawClient(addr);
  const upBefore = up.count.accepted;
  for (let i = 0; i < 20; i++) {
    await c.write(get(`/len?${i}`));
    const r = await c.response();
    assert.equal(r.status, 200);
    assert.equal(r.framing, 'length');
    assert.equal(r.body.toString(), `/len?${i}`);
    assert.equal(r.headers.get('x-up'), '1');
    assertLean(r);
  }
  assert.equal(up.count.accepted - upBefore, 1, 'one pooled upstream connection');

  await c.write(get('/chunked'));
  let r = await c.response();
  assert.equal(r.framing, 'chunked', 're-chunked to the client');
  assert.equal(r.body.toString(), 'hello world');

  await c.write(get('/close'));
  r = await c.response();
  assert.equal(r.framing, 'chunked', 'a close-delimited body arrives chunked');
  assert.equal(r.body.toString(), 'body until close');
  assert.equal(r.headers.get('connection'), undefined);

  await c.write(get('/head', '', 'HEAD'));
  r = await c.response({ head: true });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-length'), '100', 'Content-Length kept');
  assert.equal(r.headers.get('transfer-encoding'), undefined);

  await c.write(get('/204'));
  r = await c.response();
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('x-up'), '204');
  assert.equal(r.headers.get('transfer-encoding'), undefined);
  assert.equal(r.headers.get('content-length'), undefined);

  await c.write(get('/304', 'If-None-Match: "v1"\r\n'));
  r = await c.response();
  assert.equal(r.status, 304);
  assert.equal(r.headers.get('etag'), '"v1"');
  assert.equal(r.headers.get('transfer-encoding'), undefined);

  // A 304 may state the length of the representation it stands for: still no body.
  await c.write(get('/304-length'));
  r = await c.response();
  assert.equal(r.status, 304);
  assert.equal(r.headers.get('content-length'), '50');

  // Empty lines before a request line are ignored, also in a write of their own.
  await c.write('\r\n');
  await new Promise((res) => setTimeout(res, 20));
  await c.write(`\r\n${get('/len?crlf')}`);
  await expectBody(c, '/len?crlf');

  // Nothing was left over after the bodiless ones: the next response parses from its first byte.
  await c.write(get('/len?last'));
  await expectBody(c, '/len?last');
  await new Promise((res) => setTimeout(res, 30));
  assert.equal(c.pending.length, 0, 'no stray bytes');
  assert.equal(c.ended, false);
});

test('a request with Content-Length: 0 and more than 32 header fields is forwarded whole', async () => {
  const c = await rawClient(addr);
  let extra = 'Content-Length: 0\r\n';
  for (let i = 0; i < 40; i++) extra += `X-F${i}: v${i}\r\n`;
  // The head split across writes: llhttp hands the fields over in several batches.
  await c.writeSplit(get('/headers', extra, 'PUT'), [1, 2, 100, 300]);
  const r = await c.response();
  const head = r.body.toString('latin1');
  assert.match(head, /^PUT \/headers HTTP\/1\.1\r\n/);
  for (let i = 0; i < 40; i++) assert.ok(head.includes(`\r\nX-F${i}: v${i}\r\n`), `X-F${i} forwarded`);
  assertLean(r);
});

test('pipelining: heads in one write, and split at odd boundaries; responses in order', async () => {
  const c = await rawClient(addr);
  // The first is slow: the others wait for it.
  await c.write(get('/slow?a') + get('/chunked') + get('/len?c') + get('/head', '', 'HEAD') + get('/len?e'));
  await expectBody(c, '/slow?a');
  await expectBody(c, 'hello world');
  await expectBody(c, '/len?c');
  assert.equal((await c.response({ head: true })).headers.get('content-length'), '100');
  await expectBody(c, '/len?e');

  // A head cut in three; two heads and the start of a third in one packet; a cut in "\r\n\r\n".
  const a = get('/len?1');
  const b = get('/slow?2');
  const d = get('/len?3');
  const e = get('/len?4');
  const all = a + b + d + e;
  await c.writeSplit(all, [
    3,
    17,
    a.length + b.length + 5,
    a.length + b.length + d.length - 1,
    all.length - 2,
  ]);
  for (const body of ['/len?1', '/slow?2', '/len?3', '/len?4']) await expectBody(c, body);
  assert.equal(c.ended, false);
});

test('Connection: close → the response says so and the connection ends after it', async () => {
  const c = await rawClient(addr);
  await c.write(get('/len?one'));
  await expectBody(c, '/len?one');
  await c.write(get('/chunked', 'Connection: close\r\n'));
  const r = await c.response();
  assert.equal(r.body.toString(), 'hello world');
  assert.equal(r.headers.get('connection'), 'close');
  assert.equal((await c.closed()).length, 0);
});

test('hand-over to node:http mid-connection: GET, POST with a split body, GET', async () => {
  const c = await rawClient(addr);
  await c.write(get('/len?lean'));
  await expectBody(c, '/len?lean');
  const post = `POST ${node.origin}/echo HTTP/1.1\r\nHost: ${node.authority}\r\nContent-Length: 11\r\n\r\n`;
  await c.writeSplit(`${post}hello world`, [post.length - 3, post.length + 4]);
  let r = await c.response();
  assert.equal(r.status, 200, r.head);
  assert.equal(r.body.toString(), 'POST hello world');
  await c.write(`GET ${node.origin}/plain HTTP/1.1\r\nHost: ${node.authority}\r\n\r\n`);
  r = await c.response();
  assert.equal(r.body.toString(), 'plain');
  await c.write(get('/len?after'));
  await expectBody(c, '/len?after');
});

test('a POST whose head is as large as the lean on-ramp accepts is handed over and served', async () => {
  // The largest X-Big value a lean GET gets through with (the limit counts the target and the
  // field names and values), found by bisection; then a POST with the same head around it.
  const head = (method: string, n: number): string =>
    `${method} ${node.origin}/echo HTTP/1.1\r\nHost:${node.authority}\r\nContent-Length:2\r\nX-Big:${'v'.repeat(n)}\r\n\r\nok`;
  let [lo, hi] = [1000, 5000];
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    const c = await rawClient(addr);
    await c.write(head('PUT', mid).slice(0, -2).replace('Content-Length:2', 'Content-Length:0'));
    const status = (await c.response()).status;
    c.destroy();
    if (status === 431) hi = mid;
    else lo = mid;
  }
  const c = await rawClient(addr);
  await c.write(head('POST', lo));
  await expectBody(c, 'POST ok');
  const over = await rawClient(addr);
  await over.write(head('POST', hi));
  assert.equal((await over.response()).status, 431);
});

test('pipelined: a lean GET, a POST and a GET in one write', async () => {
  const c = await rawClient(addr);
  const post = `POST ${node.origin}/echo HTTP/1.1\r\nHost: ${node.authority}\r\nContent-Length: 4\r\n\r\nbody`;
  await c.write(get('/slow?1') + post + get('/len?3'));
  await expectBody(c, '/slow?1');
  await expectBody(c, 'POST body');
  await expectBody(c, '/len?3');
});

test('pipelined: a large POST body behind a slow lean GET (held, the socket paused) arrives whole', async () => {
  const c = await rawClient(addr);
  const body = Buffer.alloc(300 << 10, 'p');
  const post = `POST ${node.origin}/echo HTTP/1.1\r\nHost: ${node.authority}\r\nContent-Length: ${body.length}\r\n\r\n`;
  await c.write(Buffer.concat([Buffer.from(get('/slow?first') + post), body, Buffer.from(get('/len?last'))]));
  await expectBody(c, '/slow?first');
  const r = await c.response();
  assert.equal(r.body.length, 5 + body.length);
  assert.ok(r.body.subarray(5).equals(body), 'the body arrived intact');
  await expectBody(c, '/len?last');
});

test('many clients at once, each pipelining: every response on its own connection, in order', async () => {
  await Promise.all(
    Array.from({ length: 60 }, async (_, i) => {
      const c = await rawClient(addr);
      await c.writeSplit(get(`/len?${i}a`) + get(`/len?${i}b`) + get(`/slow?${i}c`), [i + 1], 1);
      for (const x of ['a', 'b', 'c']) await expectBody(c, `/${x === 'c' ? 'slow' : 'len'}?${i}${x}`);
      c.destroy();
    }),
  );
});

test('HTTP/1.0 is served by node:http and the connection closed', async () => {
  const c = await rawClient(addr);
  await c.write(`GET ${up.origin}/len?old HTTP/1.0\r\n\r\n`);
  await expectBody(c, '/len?old');
  await c.closed();
});

test('an origin-form request is a 400 and the connection closes', async () => {
  const c = await rawClient(addr);
  await c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const r = await c.response();
  assert.equal(r.status, 400);
  assert.match(r.body.toString(), /absolute-form/);
  await c.closed();
});

test('Expect: 100-continue gets 100 before the body is sent', async () => {
  const c = await rawClient(addr);
  await c.write(
    `POST ${node.origin}/echo HTTP/1.1\r\nHost: ${node.authority}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
  );
  assert.equal((await c.response()).status, 100);
  await c.write('12345');
  await expectBody(c, 'POST 12345');
});

test('a chunked upload is handed over and forwarded whole', async () => {
  const c = await rawClient(addr);
  const head = `POST ${node.origin}/echo HTTP/1.1\r\nHost: ${node.authority}\r\nTransfer-Encoding: chunked\r\n\r\n`;
  await c.writeSplit(`${head}3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n`, [head.length - 1, head.length + 6]);
  await expectBody(c, 'POST abcdefg');
  await c.write(get('/len?next'));
  await expectBody(c, '/len?next');
});

test('an Upgrade after a lean request on the same connection becomes a tunnel', async () => {
  const c = await rawClient(addr);
  await c.write(get('/len?first'));
  await expectBody(c, '/len?first');
  await c.write(
    `GET ${node.origin}/chat HTTP/1.1\r\nHost: ${node.authority}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly;`,
  );
  const got = await c.until('early;');
  assert.match(got, /^HTTP\/1\.1 101/);
  await c.write('more');
  assert.equal(await c.until('more'), 'more');
});

test('CONNECT: early data in the head packet reaches the upstream; also after a pipelined GET', async () => {
  let c = await rawClient(addr);
  await c.write(`CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\nearly bytes`);
  let got = await c.until('early bytes');
  assert.match(got, /^HTTP\/1\.1 200 .*\r\n\r\nearly bytes$/s);
  await c.write('ping');
  assert.equal(await c.until('ping'), 'ping');
  c.destroy();

  c = await rawClient(addr);
  await c.write(`${get('/slow?x')}CONNECT ${echo.authority} HTTP/1.1\r\nHost: x\r\n\r\nafter get`);
  await expectBody(c, '/slow?x');
  got = await c.until('after get');
  assert.match(got, /^HTTP\/1\.1 200 .*\r\n\r\nafter get$/s);
  c.destroy();
});

test('CONNECT split at odd boundaries, early data in the last packet with the end of the head', async () => {
  const c = await rawClient(addr);
  const head = `CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\nX-A: 1\r\n\r\n`;
  await c.writeSplit(`${head}split early`, [1, 4, 9, head.length - 3]);
  const got = await c.until('split early');
  assert.match(got, /^HTTP\/1\.1 200 .*\r\n\r\nsplit early$/s);
  c.destroy();
});

test('CONNECT with a bad target → 400 and the connection closes', async () => {
  for (const target of ['example.com', 'u@example.com:443', ':443']) {
    const c = await rawClient(addr);
    await c.write(`CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await c.response();
    assert.equal(r.status, 400, target);
    await c.closed();
  }
});

test('an app with only ingress and egress hooks takes the lean path: same hook order, same audit record', async () => {
  const all = tracingHooks();
  const traced = await startApp(
    hooksApp({ lifecycle: all.lifecycle, ingress: all.ingress, egress: all.egress }),
  );
  after(() => traced.stop());
  const plain = `GET http://localhost:${node.port}/plain HTTP/1.1\r\nHost: localhost:${node.port}\r\n\r\n`;
  let c = await rawClient(traced.proxy.address());
  for (let i = 0; i < 2; i++) {
    await c.write(plain);
    const r = await c.response();
    assert.equal(r.body.toString(), 'plain');
    assertLean(r);
  }
  c.destroy();
  const [conn] = traced.recorder.connections();
  assert.ok(conn !== undefined);
  await traced.recorder.waitFor(conn, 'ingress.handleConnectionClose');
  traced.recorder.expectHooks(
    conn,
    HOOK_ORDERS.forward_http1_keepalive.filter((h) => !h.startsWith('http.') && !h.startsWith('httpBody.')),
  );
  // The same GET after a POST with a body on the same connection (once the node:http path;
  // now the one engine serves both, and the records must still match).
  c = await rawClient(traced.proxy.address());
  await c.write(`POST http://localhost:${node.port}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx`);
  await expectBody(c, 'POST x');
  await c.write(plain);
  const r = await c.response();
  assert.equal(r.body.toString(), 'plain');
  assertLean(r);
  c.destroy();
  const records = await traced.waitForAudit(4);
  const [lean, , , full] = records.map(({ conn_id, request_id, client, peer, duration_ms, ...rest }) => rest);
  assert.deepEqual(lean, full, 'the record after a body equals the first one');
  assert.equal(lean?.status, 200);
  assert.equal(lean?.close_reason, 'done');
  assert.equal(lean?.bytes_down, 5);
});
