/**
 * The lean forwarding path (bodiless requests, no HTTP hooks: `offramps/http/pool.ts`) against
 * a raw TCP upstream that writes exact bytes: keep-alive reuse, chunked, close-delimited and
 * HEAD responses, 1xx dropped, hop-by-hop response fields removed, malformed responses as 502,
 * a stale pooled connection retried, a client that leaves mid-body, a large body.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import { hooksApp, startApp } from '../src/testing/index.ts';

type Responder = (socket: net.Socket, requestHead: string) => void;

/** A raw upstream: each request head (bodiless) goes to the responder for its path. */
async function rawUpstream(routes: Record<string, Responder>) {
  const state = { connections: 0, heads: [] as string[], closed: 0 };
  const server = net.createServer((socket) => {
    state.connections++;
    socket.on('close', () => state.closed++);
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        state.heads.push(head);
        const path = head.split(' ')[1] ?? '';
        const route = routes[path];
        if (route === undefined) socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
        else route(socket, head);
      }
    });
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  after(() => server.close());
  const { port } = server.address() as net.AddressInfo;
  return { state, origin: `http://127.0.0.1:${port}` };
}

const served = new WeakSet<net.Socket>();
const up = await rawUpstream({
  '/ok': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 1\r\n\r\nok'),
  '/chunked': (s) => {
    s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n');
    setTimeout(() => s.write('6\r\n world\r\n0\r\n\r\n'), 10);
  },
  '/early': (s) =>
    s.write(
      'HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal',
    ),
  '/until-close': (s) => s.end('HTTP/1.1 200 OK\r\n\r\nbody until close'),
  '/hop': (s) =>
    s.write(
      'HTTP/1.1 200 OK\r\nconnection: x-secret, keep-alive\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nx-kept: 2\r\ncontent-length: 0\r\n\r\n',
    ),
  '/head': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n'),
  '/garbage': (s) => s.write('HTTP/1.1 abc\r\n\r\n'),
  '/two-lengths': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok'),
  '/then-close': (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce'),
  '/first-only': (s) => {
    // Answers the first request on a connection; a second one finds it closed, unanswered.
    if (served.has(s)) s.destroy();
    else {
      served.add(s);
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst');
    }
  },
  '/big': (s) => {
    const body = Buffer.alloc(4 << 20, 'b');
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`);
    s.write(body);
  },
  '/slow': (s) => {
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsl');
    setTimeout(() => s.write('ow'), 500);
  },
  '/stall': (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nfirst bytes'),
});
const proxy = await startApp(hooksApp());
const { host, port } = proxy.proxy.address();
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
after(() => {
  agent.destroy();
  return proxy.stop();
});

function get(
  path: string,
  method = 'GET',
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: `${up.origin}${path}`, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('sequential requests reuse one upstream connection; the head goes up as the client sent it', async () => {
  const before = up.state.connections;
  for (let i = 0; i < 3; i++) {
    const r = await get('/ok');
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'ok');
    assert.equal(r.headers['x-up'], '1');
  }
  assert.equal(up.state.connections - before, 1);
  const head = up.state.heads.at(-1) ?? '';
  assert.match(head, /^GET \/ok HTTP\/1\.1\r\n/);
  assert.match(head, new RegExp(`\r\nHost: ${up.origin.slice(7)}\r\n`));
  assert.doesNotMatch(head, /proxy-|connection:/i);
});

test('chunked, close-delimited and 1xx-preceded responses arrive whole', async () => {
  assert.equal((await get('/chunked')).body.toString(), 'hello world');
  const early = await get('/early');
  assert.equal(early.status, 200);
  assert.equal(early.body.toString(), 'final');
  assert.equal((await get('/until-close')).body.toString(), 'body until close');
});

test('hop-by-hop response fields, and those Connection names, are not relayed', async () => {
  const r = await get('/hop');
  assert.equal(r.headers['x-kept'], '2');
  assert.equal(r.headers['x-secret'], undefined);
  assert.notEqual(r.headers['keep-alive'], 'timeout=5'); // Node's server states its own
});

test('a HEAD response has no body to wait for; the connection serves the next request', async () => {
  const r = await get('/head', 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], '100');
  assert.equal((await get('/ok')).body.toString(), 'ok');
});

test('malformed upstream responses are a 502', async () => {
  assert.equal((await get('/garbage')).status, 502);
  assert.equal((await get('/two-lengths')).status, 502);
});

test('a pooled connection the upstream closed is replaced without the client noticing', async () => {
  assert.equal((await get('/then-close')).body.toString(), 'once'); // closed after the response
  await new Promise((r) => setTimeout(r, 20));
  assert.equal((await get('/ok')).body.toString(), 'ok');
  // Closed while the request was on its way: sent again on a new connection (it has no body).
  const firstOnly = () => up.state.heads.filter((h) => h.startsWith('GET /first-only ')).length;
  assert.equal((await get('/first-only')).body.toString(), 'first');
  assert.equal((await get('/first-only')).body.toString(), 'first');
  assert.equal(firstOnly(), 3, 'the second request was sent twice');
});

test('a large body is relayed intact', async () => {
  const r = await get('/big');
  assert.equal(r.body.length, 4 << 20);
  assert.ok(r.body.every((b) => b === 98));
});

test('a client that leaves mid-body closes the upstream connection', async () => {
  const closedBefore = up.state.closed;
  const socket = net.connect(port, host);
  socket.write(`GET ${up.origin}/stall HTTP/1.1\r\nhost: x\r\n\r\n`);
  const [first] = (await once(socket, 'data')) as [Buffer];
  assert.match(first.toString(), /^HTTP\/1\.1 200/);
  // A reset: a FIN alone is a half-close, and a half-closed client still gets its response.
  socket.resetAndDestroy();
  const deadline = Date.now() + 2000;
  while (up.state.closed === closedBefore && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  assert.ok(up.state.closed > closedBefore, 'the upstream connection was closed');
});

test('an upstream stream that is not a TCP socket (tcpConnectOverride) is parsed from its data events', async () => {
  let wrapped = 0;
  const own = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const other = await startApp(
    hooksApp({
      egress: {
        tcpConnectOverride: async (addrs: readonly { host: string; port: number }[]) => {
          const a = addrs[0] as { host: string; port: number };
          const s = net.connect(a.port, a.host);
          await once(s, 'connect');
          wrapped++;
          // A plain Duplex over the socket: no libuv handle for the parser to read from.
          const d = new Duplex({
            read() {
              s.resume();
            },
            write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void) {
              s.write(chunk, cb);
            },
            destroy(err: Error | null, cb: (e: Error | null) => void) {
              s.destroy();
              cb(err);
            },
          });
          s.on('data', (c) => {
            if (!d.push(c)) s.pause();
          });
          s.on('end', () => d.push(null));
          s.on('error', (e) => d.destroy(e));
          return d;
        },
      },
    }),
  );
  after(() => {
    own.destroy();
    return other.stop();
  });
  const a = other.proxy.address();
  const fetch = (path: string) =>
    new Promise<string>((resolve, reject) => {
      http
        .get({ host: a.host, port: a.port, path: `${up.origin}${path}`, agent: own }, (res) => {
          let body = '';
          res.setEncoding('latin1');
          res.on('data', (c: string) => {
            body += c;
          });
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
  assert.equal(await fetch('/chunked'), 'hello world');
  assert.equal(await fetch('/ok'), 'ok');
  assert.equal((await fetch('/big')).length, 4 << 20);
  assert.equal(await fetch('/until-close'), 'body until close');
  assert.ok(wrapped >= 1);
});

test('pooled connections close after pool_idle_timeout, also after a response longer than it', async () => {
  const own = new http.Agent({ keepAlive: false });
  const short = await startApp(hooksApp(), { settings: { egress: { pool_idle_timeout: '300ms' } } });
  after(() => {
    own.destroy();
    return short.stop();
  });
  const a = short.proxy.address();
  const closedBefore = up.state.closed;
  const body = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: a.host, port: a.port, path: `${up.origin}/slow`, agent: own }, (res) => {
        let b = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => {
          b += c;
        });
        res.on('end', () => resolve(b));
      })
      .on('error', reject);
  });
  assert.equal(body, 'slow');
  const deadline = Date.now() + 3000;
  while (up.state.closed === closedBefore && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20));
  assert.ok(up.state.closed > closedBefore, 'the idle upstream connection was closed');
});
