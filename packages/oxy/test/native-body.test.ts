/**
 * Response body filters on the native HTTP/1.1 engine (`onramps/http1/native-body.ts`, the
 * addon's `h1-body.c`): an app whose only forwarding hook is `getResponseBodyFilter` keeps the
 * native engine, and its filter sees, rewrites or stops each body as on the JS engine, for every
 * upstream framing (Content-Length, chunked with trailers, close-delimited, empty), chunks owned
 * or lent, sync or async. The upstream is a raw socket server, so each framing is exactly what
 * the test says; the filter is chosen by a response field the upstream echoes from the path.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { type BodyFilter, BodyVerdict, defineApp } from '../src/index.ts';
import { nativeH1Stats } from '../src/onramps/http1/native-engine.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';

/** What each filter saw when its body ended or was aborted. */
const seen: { mode: string; bytes: number; sha256: string; bytesIn: number }[] = [];
const aborts: string[] = [];

function observer(mode: string, chunks: 'owned' | 'lent'): BodyFilter {
  const hash = createHash('sha256');
  let bytes = 0;
  return {
    chunks,
    onChunk(c) {
      bytes += c.length;
      hash.update(c);
    },
    onEnd(totals) {
      seen.push({ mode, bytes, sha256: hash.digest('hex'), bytesIn: totals.bytesIn });
    },
  };
}

function filterFor(mode: string): BodyFilter | undefined {
  switch (mode) {
    case 'observe-owned':
      return observer(mode, 'owned');
    case 'observe-lent':
      return observer(mode, 'lent');
    case 'upper':
      return { rewrites: true, chunks: 'lent', onChunk: (c) => c.toString('latin1').toUpperCase() };
    case 'async-upper':
      return {
        rewrites: true,
        // Lent, and kept until its promise settles: the engine reads nothing into it meanwhile.
        chunks: 'lent',
        async onChunk(c) {
          await new Promise((r) => setTimeout(r, 1));
          return c.toString('latin1').toUpperCase();
        },
      };
    case 'tail':
      return { rewrites: true, onEnd: () => '<tail>' };
    case 'stop-first':
      return { onChunk: () => BodyVerdict.stop(451, 'not here') };
    case 'async-stop-first':
      return { onChunk: async () => BodyVerdict.stop(451, 'not here either') };
    case 'stop-late': {
      let bytes = 0;
      return {
        onChunk(c) {
          bytes += c.length;
          return bytes > 256 * 1024 ? BodyVerdict.stop(403, 'enough') : undefined;
        },
      };
    }
    case 'abort':
      return { chunks: 'lent', onChunk: () => undefined, onAbort: (reason) => void aborts.push(reason) };
    case 'throw':
      throw new Error('chooser bug');
    default:
      return undefined;
  }
}

const app = defineApp({
  name: 'native-body',
  version: '1.0.0',
  description: 'a response body filter chosen by the x-filter response field',
  start: () => ({
    httpBody: {
      getResponseBodyFilter: (res) => filterFor(String(res.headers['x-filter'] ?? '')),
    },
  }),
});

/** `n` bytes of a fixed pattern. */
function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 97 + (i % 26);
  return b;
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A raw upstream: `GET /<filter>/<framing>/<bytes>` answers `bytes` of the pattern framed as
 * `cl`, `chunked` (16 KiB chunks and a trailer), `close` (no length, then the close) or
 * `badchunk` (a chunk size that is not hex) or `bigtrailer` (200 KB of trailer fields), with
 * `x-filter: <filter>`; connections are kept alive except after `close`.
 */
function startUpstream(): Promise<net.Server> {
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const line = buf.subarray(0, buf.indexOf('\r\n')).toString('latin1');
        buf = buf.subarray(end + 4);
        const [, filter = '', framing = 'cl', size = '0'] = (line.split(' ')[1] ?? '').split('/');
        const body = pattern(Number(size));
        const head = `HTTP/1.1 200 OK\r\nx-filter: ${filter}\r\ncontent-type: text/plain\r\n`;
        if (framing === 'cl') {
          sock.write(`${head}content-length: ${body.length}\r\n\r\n`);
          sock.write(body);
        } else if (framing === 'chunked') {
          sock.write(`${head}transfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n`);
          for (let off = 0; off < body.length; off += 16384) {
            const piece = body.subarray(off, off + 16384);
            sock.write(`${piece.length.toString(16)}\r\n`);
            sock.write(piece);
            sock.write('\r\n');
          }
          sock.write('0\r\nx-sum: 1\r\n\r\n');
        } else if (framing === 'bigtrailer') {
          const field = `x-t: ${'v'.repeat(1000)}\r\n`;
          sock.end(`${head}transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n${field.repeat(200)}\r\n`);
        } else if (framing === 'badchunk') {
          sock.end(`${head}transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`);
        } else {
          sock.end(Buffer.concat([Buffer.from(`${head}connection: close\r\n\r\n`), body]));
        }
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

let upstream: net.Server;
let oxy: AppUnderTest;
let upAuthority: string;

before(async () => {
  upstream = await startUpstream();
  upAuthority = `127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
  oxy = await startApp(app);
});

after(async () => {
  await oxy.stop();
  await new Promise((r) => upstream.close(r));
});

interface Got {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly trailers?: NodeJS.Dict<string>;
  readonly body: Buffer;
  readonly complete: boolean;
}

/** One GET through the proxy; `agent` keeps the connection for the next call. */
function get(path: string, agent: http.Agent | false = false, cut = false): Promise<Got> {
  const [host, port] = oxy.address().split(':');
  return new Promise((resolve) => {
    const req = http.get({ host, port: Number(port), path: `http://${upAuthority}${path}`, agent });
    req.on('error', () => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (cut) res.destroy();
      });
      const done = (): void =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          trailers: res.trailers,
          body: Buffer.concat(chunks),
          complete: res.complete,
        });
      res.on('end', done);
      res.on('close', done);
    });
  });
}

test('the native engine serves an app whose only forwarding hook is a response body filter', async () => {
  const before = { ...nativeH1Stats };
  const r = await get('/none/cl/1000');
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 1000);
  assert.equal(nativeH1Stats.served, before.served + 1);
  assert.equal(nativeH1Stats.handedBack, before.handedBack);
});

test('an observer sees every byte of each framing, owned or lent, and the body passes unchanged', async () => {
  const size = 3 * 1024 * 1024 + 17;
  for (const mode of ['observe-owned', 'observe-lent']) {
    for (const framing of ['cl', 'chunked', 'close']) {
      seen.length = 0;
      const r = await get(`/${mode}/${framing}/${size}`);
      assert.equal(r.status, 200, `${mode} ${framing}`);
      assert.ok(r.complete, `${mode} ${framing}: complete`);
      assert.equal(sha(r.body), sha(pattern(size)), `${mode} ${framing}: the body unchanged`);
      assert.deepEqual(seen, [{ mode, bytes: size, sha256: sha(pattern(size)), bytesIn: size }]);
      // An observer keeps the upstream's length when it had one.
      assert.equal(r.headers['content-length'], framing === 'cl' ? String(size) : undefined);
      // A chunked upstream's trailers follow the filtered body.
      if (framing === 'chunked') assert.equal(r.trailers?.['x-sum'], '1', `${mode}: trailers`);
    }
  }
});

test('a rewriting filter is sent chunked without the old length; sync and async', async () => {
  for (const mode of ['upper', 'async-upper']) {
    for (const framing of ['cl', 'chunked', 'close']) {
      const r = await get(`/${mode}/${framing}/200000`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-length'], undefined);
      assert.equal(r.headers['transfer-encoding'], 'chunked');
      assert.equal(
        r.body.toString('latin1'),
        pattern(200000).toString('latin1').toUpperCase(),
        `${mode} ${framing}`,
      );
      if (framing === 'chunked') assert.equal(r.trailers?.['x-sum'], '1', `${mode}: trailers`);
    }
  }
});

test("a filter's end adds bytes, also to an empty body", async () => {
  const r = await get('/tail/cl/10');
  assert.equal(r.body.toString(), 'abcdefghij<tail>');
  const empty = await get('/tail/cl/0');
  assert.equal(empty.status, 200);
  assert.equal(empty.body.toString(), '<tail>');
  seen.length = 0;
  const observed = await get('/observe-lent/cl/0');
  assert.equal(observed.body.length, 0);
  assert.deepEqual(seen, [{ mode: 'observe-lent', bytes: 0, sha256: sha(Buffer.alloc(0)), bytesIn: 0 }]);
});

test('a stop at the first chunk is answered with its status (the head was held), and the connection goes on', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (const mode of ['stop-first', 'async-stop-first']) {
    const r = await get(`/${mode}/cl/100000`, agent);
    assert.equal(r.status, 451, mode);
    assert.match(r.body.toString(), /not here/);
    const next = await get('/none/chunked/5000', agent);
    assert.equal(next.status, 200);
    assert.equal(next.body.length, 5000);
  }
  agent.destroy();
});

test('a stop after bytes left cuts the response', async () => {
  const r = await get('/stop-late/cl/4000000');
  assert.equal(r.status, 200);
  assert.equal(r.complete, false);
  assert.ok(r.body.length < 4000000);
});

test('malformed chunked framing from the upstream is a 502 (the head was still held)', async () => {
  const r = await get('/observe-owned/badchunk/0');
  assert.equal(r.status, 502);
  const next = await get('/observe-lent/cl/100');
  assert.equal(next.status, 200);
});

test('a trailer section over the response head limit is a 502 (the upstream is at fault)', async () => {
  // Found in the read with the first chunk, before any byte of the response left.
  const r = await get('/observe-lent/bigtrailer/0');
  assert.equal(r.status, 502);
  const next = await get('/observe-lent/chunked/100');
  assert.equal(next.status, 200);
  assert.equal(next.trailers?.['x-sum'], '1');
});

test('a chooser that throws is answered 500', async () => {
  const r = await get('/throw/cl/1000');
  assert.equal(r.status, 500);
});

test('a client that leaves mid-body: the filter hears of it', async () => {
  aborts.length = 0;
  await get('/abort/cl/50000000', false, true);
  for (let i = 0; i < 200 && aborts.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(aborts, ['client_closed']);
});

test('pooled upstream connections carry filtered bodies one after another', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 20; i++) {
    const r = await get(
      `/${i % 2 ? 'upper' : 'observe-lent'}/${i % 3 ? 'cl' : 'chunked'}/${1000 + i}`,
      agent,
    );
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 1000 + i);
  }
  agent.destroy();
});

test('the audit records show the stopped and failed requests with their status', async () => {
  const records = await oxy.auditRecords();
  const statuses = records.map((r) => r.status);
  assert.ok(statuses.includes(451));
  assert.ok(statuses.includes(403));
  assert.ok(statuses.includes(500));
  assert.ok(statuses.includes(502));
});
