/**
 * Body hooks and body limits end to end, over HTTP/1.1 (curl, Node's http client) and HTTP/2
 * (Node's http2 client): an observer sees every byte and changes none, a rewriting filter's
 * body arrives whole with correct framing, a stop answers cleanly (the upstream request
 * aborted, the HTTP/2 session still usable), a stop after the response head cuts the response
 * (HTTP/1.1 connection closed, HTTP/2 stream reset while other streams finish), limits answer
 * 413 and 502, and every request writes exactly one audit record.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { type BodyFilter, BodyVerdict, defineApp } from '../src/index.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';
import { curl } from '../src/testing/clients.ts';
import { type BodyUpstream, pattern, startBodyUpstream } from './fixtures/body-upstream.ts';

/** What observers saw, per direction and path, when their body ended. */
const observed: { dir: string; path: string; bytes: number; sha256: string }[] = [];

function observer(dir: string, path: string, delay: boolean): BodyFilter {
  const hash = createHash('sha256');
  let bytes = 0;
  return {
    async onChunk(c) {
      bytes += c.length;
      hash.update(c);
      // An async observer: the next chunk must wait for this one.
      if (delay) await new Promise((r) => setImmediate(r));
    },
    onEnd(totals) {
      assert.equal(totals.bytesIn, bytes);
      observed.push({ dir, path, bytes, sha256: hash.digest('hex') });
    },
  };
}

const upper: BodyFilter = { rewrites: true, onChunk: (c) => c.toString('latin1').toUpperCase() };

/** Stops a body once more than 64 KiB went through. */
function stopAfter(status: number, reason: string): BodyFilter {
  let bytes = 0;
  return {
    onChunk(c) {
      bytes += c.length;
      return bytes > 64 * 1024 ? BodyVerdict.stop(status, reason) : undefined;
    },
  };
}

/** Each path prefix picks what the body hooks do: `/observe/`, `/upper/`, `/stop-req/`, … */
const app = defineApp({
  name: 'body-hooks',
  version: '1.0.0',
  description: 'body filters chosen by path',
  start: () => ({
    httpBody: {
      getRequestBodyFilter(head) {
        if (head.path.startsWith('/observe/') || head.path.startsWith('/async/'))
          return observer('up', head.path, head.path.startsWith('/async/'));
        if (head.path.startsWith('/upper/')) return upper;
        if (head.path.startsWith('/stop-req/')) return stopAfter(451, 'upload refused');
        if (head.path.startsWith('/throw-req/'))
          return {
            onChunk() {
              throw new Error('filter bug');
            },
          };
        return undefined;
      },
      getResponseBodyFilter(_res, ctx) {
        const path = (ctx.ext as { path?: string }).path ?? '';
        if (path.startsWith('/observe/') || path.startsWith('/async/'))
          return observer('down', path, path.startsWith('/async/'));
        if (path.startsWith('/upper/')) return upper;
        if (path.startsWith('/stop-res/')) return stopAfter(502, 'download refused');
        if (path.startsWith('/throw-res/'))
          return {
            onChunk() {
              throw new Error('response filter bug');
            },
          };
        return undefined;
      },
    },
    httpRequest: {
      // Keeps the path for the response filter (it sees the response head only).
      handleRequest(head, ctx) {
        (ctx.ext as { path?: string }).path = head.path;
        return { kind: 'forward' };
      },
    },
  }),
});

let oxy: AppUnderTest;
let up: BodyUpstream;
let proxyUrl: string;
/** Requests made through the proxy, to check the audit count at the end. */
let requests = 0;

before(async () => {
  up = await startBodyUpstream();
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: {},
        limited: { max_request_body: '1KiB', max_response_body: '1KiB' },
      },
    },
  });
  proxyUrl = `http://${oxy.address()}`;
});

after(async () => {
  await oxy.stop();
  await up.close();
});

interface Got {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  /** True when the response ended cleanly (complete), false when it was cut. */
  readonly complete: boolean;
}

/** One HTTP/1.1 request through the proxy (absolute form), the body written in `pieces`. */
function h1(
  endpoint: string,
  method: string,
  path: string,
  pieces: readonly Buffer[] = [],
  headers: http.OutgoingHttpHeaders = {},
): Promise<Got> {
  requests++;
  const [host, port] = oxy.address(endpoint).split(':');
  return new Promise((resolve) => {
    const req = http.request({
      host,
      port: Number(port),
      method,
      path: `http://${up.authority}${path}`,
      headers,
      agent: false,
    });
    // A response cut before its head arrived is a reset: status 0, not complete.
    req.on('error', () => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: res.complete,
        });
      res.on('end', done);
      res.on('aborted', done);
      res.on('error', done);
    });
    void (async () => {
      for (const p of pieces) {
        if (req.destroyed) return;
        if (!req.write(p)) await drained(req);
      }
      req.end();
    })();
  });
}

/** Waits until `w` drains or closes, leaving no listener behind. */
function drained(w: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** `n` bytes of the upstream's pattern, in 16 KiB pieces. */
function pieces(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < n; off += 16 * 1024) out.push(pattern(off, Math.min(16 * 1024, n - off)));
  return out;
}

describe('HTTP/1.1', () => {
  test('an observer sees every byte of both bodies and changes none (sha256 equal)', async () => {
    const body = pieces(1024 * 1024 + 7);
    const whole = Buffer.concat(body);
    const r = await h1('main', 'POST', '/observe/hash', body, { 'content-length': whole.length });
    assert.equal(r.status, 200);
    const got = JSON.parse(r.body.toString()) as { bytes: number; sha256: string; cl: string | null };
    assert.deepEqual([got.bytes, got.sha256], [whole.length, sha(whole)]);
    // An observer keeps the length: still sent with Content-Length.
    assert.equal(got.cl, String(whole.length));
    const upSeen = observed.find((o) => o.dir === 'up' && o.path === '/observe/hash');
    assert.deepEqual([upSeen?.bytes, upSeen?.sha256], [whole.length, sha(whole)]);

    const n = 3 * 1024 * 1024 + 1;
    const down = await h1('main', 'GET', `/async/stream?n=${n}`);
    assert.equal(down.status, 200);
    assert.equal(down.headers['content-length'], String(n));
    assert.equal(sha(down.body), sha(pattern(0, n)));
    const downSeen = observed.find((o) => o.dir === 'down' && o.path.startsWith('/async/stream'));
    assert.deepEqual([downSeen?.bytes, downSeen?.sha256], [n, sha(pattern(0, n))]);
  });

  test('a rewritten response is sent chunked, without its old length, and curl reads it whole', async () => {
    requests++;
    const r = await curl(['-x', proxyUrl, '-D', '-', `http://${up.authority}/upper/text?s=hello%20world`]);
    assert.equal(r.code, 0, r.stderr);
    const [head, body] = r.stdout.split('\r\n\r\n');
    assert.match(head ?? '', /^transfer-encoding: chunked$/im);
    assert.doesNotMatch(head ?? '', /^content-length:/im);
    assert.equal(body, 'HELLO WORLD');
  });

  test('a rewritten request body goes upstream chunked, rewritten', async () => {
    const r = await h1('main', 'POST', '/upper/hash', [Buffer.from('abc'), Buffer.from('def')], {
      'content-length': 6,
    });
    const got = JSON.parse(r.body.toString().toLowerCase()) as { sha256: string; te: string; cl: null };
    assert.equal(got.te, 'chunked');
    assert.equal(got.cl, null);
    assert.equal(got.sha256, sha(Buffer.from('ABCDEF')));
  });

  test('a request body stopped mid-way: the client gets the status, the upstream request is aborted', async () => {
    const before = { ...up.counts };
    const r = await h1('main', 'POST', '/stop-req/hash', pieces(1024 * 1024), {
      'content-length': 1024 * 1024,
    });
    assert.equal(r.status, 451);
    assert.match(r.body.toString(), /upload refused/);
    assert.equal(r.headers.connection, 'close');
    await waitFor(() => up.counts.aborted > before.aborted || up.counts.requests === before.requests);
    assert.equal(up.counts.completed, before.completed, 'the upstream never got the whole body');
  });

  test('a response body stopped mid-way is cut: curl sees a partial transfer', async () => {
    requests++;
    const r = await curl([
      '-x',
      proxyUrl,
      '-o',
      '/dev/null',
      `http://${up.authority}/stop-res/stream?n=1048576`,
    ]);
    // 18: "transfer closed with outstanding read data remaining".
    assert.equal(r.code, 18, r.stderr);
  });

  test('a throwing filter fails the request closed with 500 (request body, response body)', async () => {
    const r = await h1('main', 'POST', '/throw-req/hash', [Buffer.from('x')], { 'content-length': 1 });
    assert.equal(r.status, 500);
    // The response head waits for the filter's first bytes: a throw on the first chunk is a 500.
    const down = await h1('main', 'GET', '/throw-res/text');
    assert.equal(down.status, 500);
  });

  test('limits: a declared or streamed request body over max_request_body is answered 413', async () => {
    const before = up.counts.requests;
    const declared = await h1('limited', 'POST', '/hash', pieces(2048), { 'content-length': 2048 });
    assert.equal(declared.status, 413);
    assert.equal(up.counts.requests, before, 'refused before connecting upstream');
    const streamed = await h1('limited', 'POST', '/hash', pieces(4096), { 'transfer-encoding': 'chunked' });
    assert.equal(streamed.status, 413);
    const small = await h1('limited', 'POST', '/hash', pieces(1024), { 'content-length': 1024 });
    assert.equal(small.status, 200);
  });

  test('limits: a response over max_response_body is 502 when declared, cut when streamed', async () => {
    const declared = await h1('limited', 'GET', '/stream?n=4096');
    assert.equal(declared.status, 502);
    // The first piece is already over the limit: the head was held back, so a clean 502.
    const streamed = await h1('limited', 'GET', '/stream?n=200000&chunked=1');
    assert.equal(streamed.status, 502);
    const small = await h1('limited', 'GET', '/stream?n=1024');
    assert.deepEqual([small.status, small.body.length], [200, 1024]);
  });
});

/** One HTTP/2 request on `s`; resolves with what arrived and how the stream ended. */
async function h2(
  s: http2.ClientHttp2Session,
  method: string,
  path: string,
  body: readonly Buffer[] = [],
): Promise<Got & { rstCode: number }> {
  requests++;
  const st = s.request(
    { ':method': method, ':scheme': 'http', ':authority': up.authority, ':path': path },
    { endStream: body.length === 0 },
  );
  st.on('error', () => {});
  void (async () => {
    for (const p of body) {
      if (st.destroyed) return;
      if (!st.write(p)) await drained(st);
    }
    if (body.length > 0 && !st.destroyed) st.end();
  })();
  let status = 0;
  let headers: http.IncomingHttpHeaders = {};
  st.on('response', (h) => {
    status = Number(h[':status']);
    headers = h as http.IncomingHttpHeaders;
  });
  const chunks: Buffer[] = [];
  st.on('data', (c: Buffer) => chunks.push(c));
  // A stream the server ended with RST_STREAM(NO_ERROR) while this side still had body to send
  // (a stop) stays open in Node's client until destroyed: the response is whole at its end.
  st.on('end', () => {
    if (!st.writableFinished) setImmediate(() => st.destroy());
  });
  // Not `once`: it rejects on the stream's 'error', which a reset stream emits.
  if (!st.closed) await new Promise((resolve) => st.once('close', resolve));
  return {
    status,
    headers,
    body: Buffer.concat(chunks),
    complete: st.rstCode === http2.constants.NGHTTP2_NO_ERROR && st.readableEnded,
    rstCode: st.rstCode ?? 0,
  };
}

describe('HTTP/2', () => {
  let s: http2.ClientHttp2Session;
  before(async () => {
    s = http2.connect(proxyUrl);
    s.on('error', () => {});
    await once(s, 'remoteSettings');
  });
  after(() => s.close());

  test('an observer sees every byte both ways and changes none', async () => {
    const body = pieces(512 * 1024 + 3);
    const whole = Buffer.concat(body);
    const r = await h2(s, 'POST', '/observe/h2/hash', body);
    assert.equal(r.status, 200);
    const got = JSON.parse(r.body.toString()) as { bytes: number; sha256: string };
    assert.deepEqual([got.bytes, got.sha256], [whole.length, sha(whole)]);
    const n = 2 * 1024 * 1024;
    const down = await h2(s, 'GET', `/observe/h2/stream?n=${n}`);
    assert.equal(sha(down.body), sha(pattern(0, n)));
    const seen = observed.find((o) => o.dir === 'down' && o.path.startsWith('/observe/h2/stream'));
    assert.equal(seen?.bytes, n);
  });

  test('a rewritten response has no content-length and arrives whole', async () => {
    const r = await h2(s, 'GET', '/upper/text?s=hello%20h2');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], undefined);
    assert.equal(r.body.toString(), 'HELLO H2');
    assert.ok(r.complete);
  });

  test('a request body stopped mid-way: the status, the upstream aborted, the next request served', async () => {
    const before = { ...up.counts };
    const r = await h2(s, 'POST', '/stop-req/h2/hash', pieces(1024 * 1024));
    assert.equal(r.status, 451);
    assert.match(r.body.toString(), /upload refused/);
    assert.equal(up.counts.completed, before.completed);
    const next = await h2(s, 'GET', '/observe/h2/text?s=still%20here');
    assert.equal(next.body.toString(), 'still here');
  });

  test('a response body stopped mid-way resets its stream while another stream finishes', async () => {
    const n = 1024 * 1024;
    const [cut, fine] = await Promise.all([
      h2(s, 'GET', `/stop-res/h2/stream?n=${n}`),
      h2(s, 'GET', `/observe/h2/other/stream?n=${n}`),
    ]);
    assert.equal(cut.status, 200);
    assert.equal(cut.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR);
    assert.ok(cut.body.length < n);
    assert.equal(sha(fine.body), sha(pattern(0, n)));
    assert.ok(fine.complete);
  });
});

describe('HTTP/2 limits', () => {
  test('413 for a request body over the limit, and the session goes on', async () => {
    const s = http2.connect(`http://${oxy.address('limited')}`);
    s.on('error', () => {});
    try {
      const r = await h2(s, 'POST', '/hash', pieces(8192));
      assert.equal(r.status, 413);
      const ok = await h2(s, 'GET', '/stream?n=100');
      assert.deepEqual([ok.status, ok.body.length], [200, 100]);
    } finally {
      s.close();
    }
  });
});

test('every request wrote exactly one audit record', async () => {
  const records = await oxy.waitForAudit(requests);
  await new Promise((r) => setTimeout(r, 200));
  const forwarded = oxy.auditRecords().filter((r) => r.kind === 'request');
  assert.equal(forwarded.length, requests);
  const stopped = forwarded.filter((r) => r.close_reason === 'OXY_ERR_BODY_STOPPED');
  assert.ok(stopped.length >= 4, `stops recorded: ${JSON.stringify(records.map((r) => r.close_reason))}`);
  assert.ok(forwarded.some((r) => r.close_reason === 'OXY_ERR_BODY_TOO_LARGE' && r.status === 413));
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
