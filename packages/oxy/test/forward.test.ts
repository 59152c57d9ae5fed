/**
 * Absolute-form forwarding through the HTTP/1.1 endpoint, driven by curl: bodies both ways,
 * the Host header, hop-by-hop fields and Proxy-Authorization removed (also with curl's
 * `--proxy-header`), keep-alive reuse upstream, and an unreachable upstream answered 502.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { curl, type HttpUpstream, hooksApp, startApp, startHttpUpstream } from '../src/testing/index.ts';

const upstream: HttpUpstream = await startHttpUpstream({
  '/hello': { body: 'hello from upstream', headers: { 'x-up': '1', connection: 'keep-alive' } },
  'POST /echo': (req, res) => {
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end(`got ${req.headers['content-length']} bytes`);
  },
  '/chunked': (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('part1-');
    setTimeout(() => res.end('part2'), 20);
  },
});
const proxy = await startApp(hooksApp());
after(() => upstream.close().then(() => proxy.stop()));
const proxyUrl = `http://${proxy.address()}`;

test('curl GET through the proxy reaches the upstream with its headers intact', async () => {
  const r = await curl(['-x', proxyUrl, '-i', `${upstream.origin}/hello`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/1\.1 200/);
  assert.match(r.stdout, /x-up: 1/i);
  assert.match(r.stdout, /hello from upstream$/);
  const seen = upstream.requests.at(-1)!;
  assert.equal(seen.url, '/hello');
  assert.equal(seen.headers.host, upstream.authority);
});

test('POST bodies go up and chunked responses come back', async () => {
  const r = await curl([
    '-x',
    proxyUrl,
    '--data-binary',
    'x'.repeat(5000),
    `${upstream.origin}/echo`,
    '-w',
    ' %{http_code}',
  ]);
  assert.equal(r.stdout, 'got 5000 bytes 201');
  const c = await curl(['-x', proxyUrl, `${upstream.origin}/chunked`]);
  assert.equal(c.stdout, 'part1-part2');
});

test('Proxy-Authorization and hop-by-hop fields are not forwarded (also with --proxy-header)', async () => {
  const r = await curl([
    '-x',
    proxyUrl,
    '--proxy-user',
    'alice:secret',
    '--proxy-header',
    'X-Proxy-Only: 1',
    '-H',
    'Connection: keep-alive, X-Hop',
    '-H',
    'X-Hop: drop me',
    '-H',
    'X-Keep: keep me',
    '-H',
    'TE: trailers',
    `${upstream.origin}/hello`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const h = upstream.requests.at(-1)!.headers;
  assert.equal(h['proxy-authorization'], undefined);
  assert.equal(h['x-hop'], undefined);
  assert.equal(h.te, undefined);
  assert.equal(h['proxy-connection'], undefined);
  assert.equal(h['x-keep'], 'keep me');
});

test('keep-alive: consecutive requests on one client connection reuse one upstream connection', async () => {
  const before = upstream.requests.length;
  const r = await curl([
    '-x',
    proxyUrl,
    `${upstream.origin}/hello`,
    `${upstream.origin}/hello`,
    `${upstream.origin}/hello`,
  ]);
  assert.equal(r.stdout, 'hello from upstream'.repeat(3));
  assert.equal(upstream.requests.length, before + 3);
});

test('an origin-form request is refused with 400, and a refused upstream port is 502 with a reason', async () => {
  const bad = await curl(['-i', `${proxyUrl}/not-a-proxy-request`]);
  assert.match(bad.stdout, /^HTTP\/1\.1 400/);
  const refused = await curl(['-x', proxyUrl, '-i', 'http://127.0.0.1:1/x']);
  assert.match(refused.stdout, /^HTTP\/1\.1 502/);
  assert.match(refused.stdout, /refused/i);
});

test('each forwarded request leaves one audit record when it ends', async () => {
  const audited = await startApp(hooksApp());
  const r = await curl(['-x', `http://${audited.address()}`, `${upstream.origin}/hello`]);
  assert.equal(r.stdout, 'hello from upstream');
  await audited.stop();
  const records = audited.auditRecords();
  assert.equal(records.length, 1);
  const rec = records[0]!;
  assert.equal(rec.kind, 'request');
  assert.equal(rec.target, upstream.authority);
  assert.equal(rec.upstream, upstream.authority);
  assert.equal(rec.status, 200);
  assert.equal(rec.bytes_down, 'hello from upstream'.length);
  assert.equal(rec.close_reason, 'done');
  assert.deepEqual(rec.decisions, ['egress:direct']);
  assert.match(String(rec.conn_id), /^c-/);
  assert.match(String(rec.request_id), /^r-/);
  assert.equal(typeof rec.duration_ms, 'number');
});

test('upstream connections are reused across requests and across client connections', async () => {
  const counted = await startHttpUpstream(
    Object.fromEntries(['/a', '/b', '/c', '/d'].map((p) => [p, { body: 'counted' }])),
  );
  after(() => counted.close());
  const origin = counted.origin;
  const one = await curl(['-x', proxyUrl, `${origin}/a`, `${origin}/b`, `${origin}/c`]);
  assert.equal(one.stdout, 'counted'.repeat(3));
  const two = await curl(['-x', proxyUrl, `${origin}/d`]);
  assert.equal(two.stdout, 'counted');
  assert.equal(counted.accepted(), 1);
});
