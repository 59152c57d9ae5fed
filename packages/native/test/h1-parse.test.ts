/**
 * The native HTTP/1.1 engine's codecs (src/h1-parse.c) through their test surface: RFC 9112
 * request and response heads, the rewrite each gets on its way through the proxy, the chunked
 * tracker, the inputs the engine must hand back to the JS engine (never answer itself), and a
 * time-bounded fuzz of random and mutated heads (no crash, bounded memory).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { h1 } from 'native';

const MAX = 16384;
const req = (text: string) => h1.h1ParseRequest(Buffer.from(text, 'latin1'), MAX);
const res = (text: string, bodiless = false, close = false) =>
  h1.h1ParseResponse(Buffer.from(text, 'latin1'), MAX, bodiless, close);

test('request heads: absolute-form targets become origin-form, Host last, hop-by-hop fields dropped', () => {
  const head =
    'GET http://Example.COM:8080/a/b?q=1#frag HTTP/1.1\r\nHost: example.com:8080\r\n' +
    'Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nProxy-Connection: keep-alive\r\n' +
    'Proxy-Authorization: Basic eA==\r\nKeep-Alive: 5\r\nTE: trailers\r\nAccept:  */* \r\n\r\n';
  const r = req(head);
  assert.ok(typeof r === 'object');
  assert.equal(r.headLength, head.length);
  assert.equal(r.method, 'GET');
  assert.equal(r.host, 'example.com');
  assert.equal(r.port, 8080);
  assert.equal(r.keepAlive, 1);
  assert.equal(r.rewritten, 'GET /a/b?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: Example.COM:8080\r\n\r\n');
  // No path: "/"; a query alone gets one; IPv6 literals keep their brackets in Host.
  const q = req('GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n');
  assert.ok(typeof q === 'object');
  assert.equal(q.rewritten, 'GET /?x HTTP/1.1\r\nHost: h\r\n\r\n');
  assert.equal(q.port, 80);
  const v6 = req('HEAD http://[::1]:81 HTTP/1.1\r\nHost: [::1]:81\r\nConnection: close\r\n\r\n');
  assert.ok(typeof v6 === 'object');
  assert.equal(v6.host, '::1');
  assert.equal(v6.keepAlive, 0);
  assert.equal(v6.rewritten, 'HEAD / HTTP/1.1\r\nHost: [::1]:81\r\n\r\n');
});

test('a Content-Length body: the length is restated after Host; Content-Length: 0 is kept as sent', () => {
  const r = req('POST http://h/p HTTP/1.1\r\ncontent-length: 007\r\nHost: h\r\nX: 1\r\n\r\nabcdefg');
  assert.ok(typeof r === 'object');
  assert.equal(r.contentLength, 7);
  // With a body the JS engine sends the fields as its body stage's head has them: lower-case, joined.
  assert.equal(r.rewritten, 'POST /p HTTP/1.1\r\nx: 1\r\nHost: h\r\nContent-Length: 7\r\n\r\n');
  const z = req('PUT http://h/p HTTP/1.1\r\nContent-Length: 0\r\nHost: h\r\n\r\n');
  assert.ok(typeof z === 'object');
  assert.equal(z.rewritten, 'PUT /p HTTP/1.1\r\nContent-Length: 0\r\nHost: h\r\n\r\n');
});

test('incomplete heads wait; what the engine does not serve is handed back', () => {
  assert.equal(req('GET http://h/ HTTP/1.1\r\nHost: h\r\n'), h1.H1_PARSE.incomplete);
  const handBack = [
    'CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    'GET http://h/ HTTP/1.0\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET http://h:0/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET http://h:70000/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n',
    'POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n',
    'get http://h/ HTTP/1.1\r\nHost: h\r\n\r\n'.replace('get', 'g(t'),
    'GET http://h/ HTTP/1.1\r\nBad Name: x\r\nHost: h\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost : h\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n',
    'GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n',
    'GET http://h/ HTTP/1.1\nHost: h\n\n',
    'GET http://h/\tx HTTP/1.1\r\nHost: h\r\n\r\n',
    '\0\0\0\0',
    `GET http://h/ HTTP/1.1\r\nHost: h\r\nX: ${'a'.repeat(MAX)}\r\n\r\n`,
  ];
  for (const h of handBack) assert.equal(req(h), h1.H1_PARSE.handBack, JSON.stringify(h.slice(0, 60)));
});

test('response heads: the framing read, the head relayed as the JS engine writes it', () => {
  const r = res(
    'HTTP/1.1 200 OK\r\nConnection: x-drop, keep-alive\r\nX-Drop: 1\r\nTransfer-Encoding: chunked\r\nX-Keep: 2\r\n\r\n',
  );
  assert.ok(typeof r === 'object');
  assert.equal(r.chunked, 1);
  assert.equal(r.keepAlive, 1);
  assert.equal(r.rewritten, 'HTTP/1.1 200 OK\r\nX-Keep: 2\r\nTransfer-Encoding: chunked\r\n\r\n');
  const cl = res('HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n', false, true);
  assert.ok(typeof cl === 'object');
  assert.equal(cl.contentLength, 3);
  assert.equal(cl.rewritten, 'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n');
  // No length, not chunked: delimited by the close upstream, chunked to the client.
  const close = res('HTTP/1.0 200 OK\r\n\r\n');
  assert.ok(typeof close === 'object');
  assert.equal(close.keepAlive, 0);
  assert.equal(close.rewritten, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  // Bodiless (HEAD, 204, 304): no framing added.
  const nc = res('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', true);
  assert.ok(typeof nc === 'object');
  assert.equal(nc.rewritten, 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n');
  const noReason = res('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n');
  assert.ok(typeof noReason === 'object');
  assert.equal(noReason.rewritten, 'HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n');
  for (const bad of [
    'HTTP/1.1 abc\r\n\r\n',
    'HTTP/2.0 200 OK\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n',
    'HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n',
    'HTTP/1.1 200 OK\nX: 1\n\n\r\n\r\n',
  ])
    assert.equal(res(bad), h1.H1_PARSE.bad, JSON.stringify(bad));
});

test('the chunked tracker finds the end of a body, extensions and trailers included', () => {
  assert.deepEqual(
    h1.h1Chunks(Buffer.from('5;ext="a b"\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\nNEXT')),
    [46, 1, 15],
  );
  assert.deepEqual(h1.h1Chunks(Buffer.from('5\r\nhel')), [6, 0, 3]);
  for (const bad of ['x\r\n', '5\r\nhelloXX', '5\nhello\r\n', '0\r\nT\n\r\n', `${'f'.repeat(16)}\r\n`])
    assert.equal(h1.h1Chunks(Buffer.from(bad)), -1, bad);
});

test('fuzz: 100,000 random and mutated heads, no crash, bounded memory', () => {
  const seed = Number(process.env.H1_FUZZ_SEED ?? Date.now() % 100000);
  let x = seed || 1;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const seeds = [
    'GET http://example.com:8080/a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X\r\nX: 1\r\n\r\n',
    'POST http://[::1]/p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    'HTTP/1.0 304 Not Modified\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n',
  ];
  const alphabet = Buffer.from(' \r\n:;,/?#[]@\t\0\x7f\xffaZ09-_.HTTP/1.1chunked', 'latin1');
  const started = performance.now();
  const rss0 = process.memoryUsage().rss;
  let n = 0;
  for (; n < 100_000 && performance.now() - started < 20_000; n++) {
    let b: Buffer;
    if (n % 4 === 0) {
      b = Buffer.alloc(rnd(200));
      for (let i = 0; i < b.length; i++)
        b[i] = rnd(3) === 0 ? rnd(256) : (alphabet[rnd(alphabet.length)] as number);
    } else {
      b = Buffer.from(seeds[rnd(seeds.length)] as string, 'latin1');
      for (let k = rnd(4) + 1; k > 0; k--) {
        const i = rnd(b.length);
        const op = rnd(3);
        if (op === 0) b[i] = alphabet[rnd(alphabet.length)] as number;
        else if (op === 1) b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
        else b = Buffer.concat([b.subarray(0, i), Buffer.from([rnd(256)]), b.subarray(i)]);
      }
    }
    const r = h1.h1ParseRequest(b, 512);
    assert.ok(typeof r === 'object' ? r.headLength <= b.length : r <= 0);
    const s = h1.h1ParseResponse(b, 512, rnd(2) === 0, rnd(2) === 0);
    assert.ok(typeof s === 'object' ? s.headLength <= b.length : s <= 0);
    const c = h1.h1Chunks(b);
    assert.ok(c === -1 || (Array.isArray(c) && c[0] <= b.length));
  }
  assert.ok(n >= 100_000, `only ${n} cases within 20 s (seed ${seed})`);
  const grown = process.memoryUsage().rss - rss0;
  assert.ok(grown < 64 << 20, `RSS grew by ${grown} bytes (seed ${seed})`);
});
