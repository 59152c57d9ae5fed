/**
 * The lean HTTP/1.1 on-ramp at its edges, on raw sockets: malformed heads (answered as
 * `node:http` answers them, connection closed, other clients unaffected), the header and idle
 * timeouts, a client that leaves while a response is under way, draining, and HTTP/2 prior
 * knowledge whose preface arrives a byte at a time. The main paths: `http1-lean.test.ts`.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import {
  connectTunnelH2,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  unusedPort,
  waitUntil,
} from '../src/testing/index.ts';
import { expectBody, type RawClient, rawClient, rawUpstream, targetOf } from './fixtures/raw-http.ts';

const up = await rawUpstream({
  '/len': (s, head) => {
    const body = targetOf(head);
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  },
  '/slow': (s, head) => {
    const body = targetOf(head);
    setTimeout(() => s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`), 300);
  },
  '/late': (s) => setTimeout(() => s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate'), 700),
  '/stall': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nfirst bytes'),
  '/stall-chunked': (s) => s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n'),
  '/hang': () => {},
});
const echo = await startTcpEcho();
const app = await startApp(hooksApp(), { settings: { endpoints: { main: { max_header_size: '4KiB' } } } });
const timeouts = { header_read_timeout: '500ms', idle_timeout: '300ms' };
const timed = await startApp(hooksApp(), { settings: { endpoints: { main: timeouts } } });
const timedNoH2 = await startApp(hooksApp(), {
  settings: { endpoints: { main: { ...timeouts, http2: { enabled: false } } } },
});
after(async () => {
  await up.close();
  await echo.close();
  await Promise.all([app.stop(), timed.stop(), timedNoH2.stop()]);
});

const get = (path: string, extra = ''): string => up.get(path, extra);

const t = `${up.origin}/len`;
const malformed: [string, string, number][] = [
  ['a garbage request line', 'HELLO THERE\r\n\r\n', 400],
  ['a lower-case method', `get ${t} HTTP/1.1\r\n\r\n`, 400],
  ['an unknown HTTP version', `GET ${t} HTTP/1.2\r\n\r\n`, 400],
  ['a header name with a space', `GET ${t} HTTP/1.1\r\nBad Name: x\r\n\r\n`, 400],
  ['a space before the colon', `GET ${t} HTTP/1.1\r\nHost : x\r\n\r\n`, 400],
  ['a header without a colon', `GET ${t} HTTP/1.1\r\nHost x\r\n\r\n`, 400],
  ['a head over max_header_size', `GET ${t} HTTP/1.1\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`, 431],
  [
    'Content-Length twice (same value)',
    `GET ${t} HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n`,
    400,
  ],
  [
    'Content-Length twice (different)',
    `GET ${t} HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx`,
    400,
  ],
  [
    'Content-Length with chunked',
    `GET ${t} HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n`,
    400,
  ],
  ['a negative Content-Length', `GET ${t} HTTP/1.1\r\nContent-Length: -1\r\n\r\n`, 400],
  ['an obs-fold continuation line', `GET ${t} HTTP/1.1\r\nX: a\r\n b\r\n\r\n`, 400],
  ['bare LF line ends', `GET ${t} HTTP/1.1\nHost: x\n\n`, 400],
  ['a bare LF in a value', `GET ${t} HTTP/1.1\r\nX: a\nb\r\n\r\n`, 400],
  ['a bare CR', `GET ${t} HTTP/1.1\r\nX: a\rY: b\r\n\r\n`, 400],
  ['a NUL in a value', `GET ${t} HTTP/1.1\r\nX: a\0b\r\n\r\n`, 400],
  ['a NUL in the target', `GET ${t}\0 HTTP/1.1\r\n\r\n`, 400],
  ['NUL bytes only', '\0\0\0\0', 400],
  ['a control byte in a value', `GET ${t} HTTP/1.1\r\nX: a\x01b\r\n\r\n`, 400],
  ['a tab in the target', `GET ${t}\tx HTTP/1.1\r\n\r\n`, 400],
];

test('malformed heads: the right status, the connection closed, another client unaffected', async () => {
  const other = await rawClient(app.proxy.address());
  for (const [name, bytes, status] of malformed) {
    // Whole, and split a byte at a time over the first 40 bytes (the parser keeps state).
    for (const split of [false, true]) {
      const c = await rawClient(app.proxy.address());
      const buf = Buffer.from(bytes, 'latin1');
      if (split)
        await c.writeSplit(
          buf,
          Array.from({ length: 40 }, (_, i) => i + 1),
          0,
        );
      else await c.write(buf);
      const r = await c.response();
      assert.equal(r.status, status, `${name}${split ? ' (split)' : ''}: ${r.head}`);
      assert.match(r.head, /\r\nconnection: close/i);
      await c.closed();
      await other.write(get(`/len?${name.length}`));
      await expectBody(other, `/len?${name.length}`);
    }
  }
});

test('a malformed head after a good one: the good response first, then 400 and close', async () => {
  const c = await rawClient(app.proxy.address());
  await c.write(`${get('/slow?good')}GET ${t} HTTP/1.1\r\nBad Name: 1\r\n\r\n`);
  await expectBody(c, '/slow?good');
  assert.equal((await c.response()).status, 400);
  await c.closed();
  const d = await rawClient(app.proxy.address());
  await d.write(get('/len?a'));
  await expectBody(d, '/len?a');
  await d.write('\0\r\n\r\n');
  assert.equal((await d.response()).status, 400);
  await d.closed();
});

for (const [label, proxy] of [
  ['HTTP/2 on', timed],
  ['HTTP/2 off', timedNoH2],
] as const) {
  test(`timeouts (${label}): silent client, partial head, idle keep-alive, slow response`, async () => {
    const addr = proxy.proxy.address();
    const timedClose = async (c: RawClient): Promise<number> => {
      const t0 = performance.now();
      await c.closed(4000);
      return performance.now() - t0;
    };
    await Promise.all([
      (async () => {
        // Nothing sent: closed after header_read_timeout, without a response.
        const c = await rawClient(addr);
        const ms = await timedClose(c);
        assert.equal(c.pending.length, 0, 'no response to a silent client');
        assert.ok(ms >= 450 && ms < 3000, `silent client closed after ${ms} ms`);
      })(),
      ...['G', 'P', get('/len').slice(0, -4)].map(async (partial) => {
        // Part of a head: 408 after header_read_timeout.
        const c = await rawClient(addr);
        await c.write(partial);
        const t0 = performance.now();
        const r = await c.response({ timeoutMs: 4000 });
        const ms = performance.now() - t0;
        assert.equal(r.status, 408, JSON.stringify(partial));
        assert.ok(ms >= 450 && ms < 3000, `408 after ${ms} ms`);
        await c.closed();
      }),
      (async () => {
        // A slowloris that keeps sending header lines still gets 408.
        const c = await rawClient(addr);
        await c.write(get('/len').slice(0, -2));
        const drip = setInterval(() => void c.write('X-Drip: 1\r\n').catch(() => {}), 100);
        try {
          assert.equal((await c.response({ timeoutMs: 4000 })).status, 408);
        } finally {
          clearInterval(drip);
        }
      })(),
      (async () => {
        // Idle between keep-alive requests: closed after idle_timeout.
        const c = await rawClient(addr);
        await c.write(get('/len?idle'));
        await expectBody(c, '/len?idle');
        const ms = await timedClose(c);
        assert.equal(c.pending.length, 0);
        assert.ok(ms >= 250 && ms < 3000, `idle connection closed after ${ms} ms`);
      })(),
      (async () => {
        // An empty line between requests is not the start of a head: closed as idle, no 408.
        const c = await rawClient(addr);
        await c.write(get('/len?crlf'));
        await expectBody(c, '/len?crlf');
        await c.write('\r\n');
        await c.closed(4000);
        assert.equal(c.pending.toString(), '', 'no 408 for an empty line');
      })(),
      (async () => {
        // A partial second head on a keep-alive connection: 408.
        const c = await rawClient(addr);
        await c.write(get('/len?1'));
        await expectBody(c, '/len?1');
        await c.write('GET http://x');
        assert.equal((await c.response({ timeoutMs: 4000 })).status, 408);
      })(),
      (async () => {
        // A response slower than both timeouts is not cut; the connection stays usable.
        const c = await rawClient(addr);
        await c.write(get('/late'));
        await expectBody(c, 'late');
        await c.write(get('/len?2'));
        await expectBody(c, '/len?2');
      })(),
    ]);
  });
}

test('a client that leaves while a response is under way: the upstream exchange is dropped', async () => {
  // A FIN is not leaving: a half-closed client still reads its response (issue 19).
  const cases: [string, string, (c: RawClient) => void][] = [
    ['reset mid-body', '/stall', (c) => c.socket.resetAndDestroy()],
    ['reset mid-chunked-body', '/stall-chunked', (c) => c.socket.resetAndDestroy()],
    ['reset before the response head', '/hang', (c) => c.socket.resetAndDestroy()],
  ];
  for (const [name, path, leave] of cases) {
    const c = await rawClient(app.proxy.address());
    const closedBefore = up.count.closed;
    const audited = app.auditRecords().length;
    await c.write(get(path));
    if (path !== '/hang') await c.until('first');
    else await waitUntil(() => up.heads.at(-1)?.startsWith('GET /hang ') === true, 'the request upstream');
    leave(c);
    await waitUntil(() => up.count.closed > closedBefore, `${name}: the upstream connection closed`);
    const records = await app.waitForAudit(audited + 1);
    assert.equal(records.at(-1)?.close_reason, 'client_closed', name);
    await c.closed();
  }
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'no connection left');
  const c = await rawClient(app.proxy.address());
  await c.write(get('/len?after'));
  await expectBody(c, '/len?after');
});

test('after a Connection: close response the proxy closes its socket, whatever the client does', async () => {
  const own = await startApp(hooksApp(), { settings: { endpoints: { main: { max_header_size: '1KiB' } } } });
  after(() => own.stop());
  const conns = own.proxy.runtime.connections;
  // A client that keeps its side open after the proxy's FIN.
  const half = await rawClient(own.proxy.address(), { allowHalfOpen: true });
  await half.write(get('/len?bye', 'Connection: close\r\n'));
  assert.equal((await half.response()).headers.get('connection'), 'close');
  await half.closed();
  await waitUntil(() => conns.size === 0, 'the half-open connection closed by the proxy', 2000);
  half.destroy();
  // The same after a CONNECT refused for its target.
  const refused = await rawClient(own.proxy.address(), { allowHalfOpen: true });
  await refused.write('CONNECT nowhere HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await refused.response()).status, 400);
  await refused.closed();
  await waitUntil(() => conns.size === 0, 'the refused CONNECT closed by the proxy', 2000);
  refused.destroy();
  // A client that pipelined more than the proxy holds unread (the socket is paused) behind it.
  const many = await rawClient(own.proxy.address());
  let batch = get('/slow?bye', 'Connection: close\r\n');
  while (batch.length < 8 * 1024) batch += get('/len?never');
  await many.write(batch);
  assert.equal((await many.response()).headers.get('connection'), 'close');
  await many.closed();
  await waitUntil(() => conns.size === 0, 'the paused connection closed by the proxy', 2000);
  many.destroy();
});

test('after a CONNECT the tunnel pipeline refuses (502), the proxy closes its socket, whatever the client does', async () => {
  const own = await startApp(hooksApp(), { leakCheck: false });
  const conns = own.proxy.runtime.connections;
  const port = await unusedPort();
  const c = await rawClient(own.proxy.address(), { allowHalfOpen: true });
  try {
    await c.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal((await c.response()).status, 502);
    await c.closed();
    await waitUntil(() => conns.size === 0, 'the failed CONNECT closed by the proxy', 1000);
  } finally {
    c.destroy();
    await own.stop();
  }
});

test('the HTTP/2 preface after a request, or with HTTP/2 off, is a 400 as with node:http', async () => {
  const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
  let c = await rawClient(timedNoH2.proxy.address());
  await c.write(preface);
  assert.equal((await c.response()).status, 400);
  await c.closed();
  c = await rawClient(app.proxy.address());
  await c.write(get('/len?h1') + preface);
  await expectBody(c, '/len?h1');
  assert.equal((await c.response()).status, 400);
  await c.closed();
});

test('HTTP/2 prior knowledge whose preface arrives a byte at a time', async () => {
  const raw = net.connect(app.proxy.address().port, '127.0.0.1');
  await once(raw, 'connect');
  raw.setNoDelay(true);
  let dribble = 40; // the preface (24 bytes) and the start of the SETTINGS frame
  const d = new Duplex({
    read() {
      raw.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      void (async () => {
        let i = 0;
        while (dribble > 0 && i < chunk.length) {
          raw.write(chunk.subarray(i, i + 1));
          i++;
          dribble--;
          await new Promise((r) => setTimeout(r, 3));
        }
        if (i < chunk.length) raw.write(chunk.subarray(i), cb);
        else cb();
      })();
    },
    destroy(err, cb) {
      raw.destroy();
      cb(err);
    },
  });
  raw.on('data', (c: Buffer) => {
    if (!d.push(c)) raw.pause();
  });
  raw.on('end', () => d.push(null));
  raw.on('error', (e) => d.destroy(e));
  const session = http2.connect(`http://${app.address()}`, { createConnection: () => d });
  session.on('error', () => {});
  after(() => session.destroy());
  const tunnel = await connectTunnelH2(session, echo.authority);
  assert.equal(tunnel.status, 200);
  tunnel.stream.write('through h2');
  assert.equal((await readBytes(tunnel.stream, 10)).toString(), 'through h2');
  tunnel.stream.end();
  await new Promise<void>((resolve) => session.close(() => resolve()));
});

test('drain: an idle keep-alive connection is closed; a response under way ends with Connection: close', async () => {
  const drained = await startApp(hooksApp());
  after(() => drained.stop());
  const addr = drained.proxy.address();
  const idle = await rawClient(addr);
  await idle.write(get('/len?idle'));
  await expectBody(idle, '/len?idle');
  const busy = await rawClient(addr);
  // Pipelined behind the response under way: dropped, the connection closes after it.
  await busy.write(get('/slow?busy') + get('/len?dropped'));
  await waitUntil(() => up.heads.at(-1)?.startsWith('GET /slow?busy ') === true, 'the request upstream');
  const t0 = performance.now();
  const done = drained.proxy.drain(5000);
  await idle.closed(2000);
  assert.ok(performance.now() - t0 < 1000, 'the idle connection closed at once');
  assert.equal(idle.pending.length, 0);
  const r = await busy.response();
  assert.equal(r.body.toString(), '/slow?busy');
  assert.equal(r.headers.get('connection'), 'close');
  assert.equal((await busy.closed(2000)).length, 0, 'nothing after the Connection: close response');
  await done;
  assert.equal(drained.proxy.runtime.connections.size, 0);
});

test('beginDrain (restart): the next response on a kept-alive connection says Connection: close, then it closes', async () => {
  const restarting = await startApp(hooksApp());
  after(() => restarting.stop());
  const c = await rawClient(restarting.proxy.address());
  await c.write(get('/len?before'));
  const before = await c.response();
  assert.equal(before.headers.get('connection'), undefined);
  restarting.proxy.beginDrain();
  await c.write(get('/len?after'));
  const r = await c.response();
  assert.equal(r.body.toString(), '/len?after');
  assert.equal(r.headers.get('connection'), 'close');
  await c.closed(2000);
});

test('a head cut short by the client FIN gets a 400, as node:http answers it', async () => {
  const c = await rawClient(app.proxy.address(), { allowHalfOpen: true });
  await c.write(`GET ${up.origin}/len?cut HTTP/1.1\r\nHost: x\r\n`);
  c.socket.end();
  const r = await c.response();
  assert.equal(r.status, 400, r.head);
  await c.closed();
});
