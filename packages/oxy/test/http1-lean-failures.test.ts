/**
 * The lean HTTP/1.1 on-ramp when the other side misbehaves, on raw sockets: upstreams that
 * refuse, cut a body short or reset; egress hooks that block, throw or are slow (and a client
 * that leaves meanwhile); a client that pipelines far ahead or reads slowly; bytes outside
 * ASCII; hop-by-hop request fields. A truncated body must never reach the client as complete.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/index.ts';
import { hooksApp, startApp, unusedPort, waitUntil } from '../src/testing/index.ts';
import { expectBody, type RawClient, rawClient, rawUpstream, targetOf } from './fixtures/raw-http.ts';

const up = await rawUpstream({
  '/len': (s, head) => {
    const body = targetOf(head);
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  },
  '/cut-length': (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this'),
  '/cut-chunked': (s) => s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nonly\r\n'),
  '/reset-close': (s) => {
    s.write('HTTP/1.1 200 OK\r\n\r\npartial');
    setTimeout(() => s.resetAndDestroy(), 20);
  },
  '/reset-head': (s) => s.resetAndDestroy(),
  '/latin1': (s, head) => {
    const x = /\r\nx-8bit: ([^\r]*)\r\n/i.exec(head)?.[1] ?? '';
    s.write(Buffer.from(`HTTP/1.1 200 OK\r\nx-back: ${x}\xe9\r\ncontent-length: 2\r\n\r\nok`, 'latin1'));
  },
  '/headers': (s, head) => s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${head.length}\r\n\r\n${head}`),
  '/endless': (s) => {
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n');
    const piece = Buffer.alloc(256 << 10, 'e');
    const timer = setInterval(() => {
      if (s.destroyed) clearInterval(timer);
      else if (!s.writableNeedDrain) s.write(piece);
    }, 5);
  },
  '/big': (s) => {
    const body = Buffer.alloc(3 << 20, 'b');
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`);
    s.write(body);
  },
});
const app = await startApp(hooksApp(), { settings: { endpoints: { main: { max_header_size: '2KiB' } } } });
let slowHookCalls = 0;
const hooked = await startApp(
  hooksApp({
    egress: {
      handleConnection: async (target) => {
        if (target.host === 'blocked.invalid') return EgressDecision.block('test block');
        if (target.host === 'throws.invalid') throw new Error('secret detail');
        if (target.host === 'slow.invalid') {
          slowHookCalls++;
          await new Promise((r) => setTimeout(r, 300));
          return EgressDecision.direct({ host: '127.0.0.1', port: Number(up.authority.split(':')[1]) });
        }
        return EgressDecision.direct(target);
      },
    },
  }),
);
after(async () => {
  await up.close();
  await Promise.all([app.stop(), hooked.stop()]);
});

const get = (path: string, extra = ''): string => up.get(path, extra);

test('an upstream that refuses or resets before answering: 502, and the connection serves on', async () => {
  const c = await rawClient(app.proxy.address());
  const port = await unusedPort();
  await c.write(`GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  let r = await c.response();
  assert.equal(r.status, 502, r.head);
  assert.equal(r.headers.get('connection'), undefined, 'kept alive');
  await c.write(get('/reset-head'));
  r = await c.response();
  assert.equal(r.status, 502, r.head);
  await c.write(get('/len?next'));
  await expectBody(c, '/len?next');
});

test('a HEAD the proxy answers itself (502, 403) has no body; the next response follows at once', async () => {
  const port = await unusedPort();
  for (const [proxy, target] of [
    [app, `http://127.0.0.1:${port}/`],
    [hooked, 'http://blocked.invalid/'],
  ] as const) {
    const c = await rawClient(proxy.proxy.address());
    await c.write(`HEAD ${target} HTTP/1.1\r\nHost: x\r\n\r\n${get('/len?after-head')}`);
    const r = await c.response({ head: true });
    assert.ok(r.status === 502 || r.status === 403, r.head);
    await expectBody(c, '/len?after-head');
  }
});

test('a body the upstream cuts short never reaches the client as complete', async () => {
  for (const path of ['/cut-length', '/cut-chunked', '/reset-close']) {
    const c = await rawClient(app.proxy.address());
    await c.write(get(path));
    const rest = (await c.closed()).toString('latin1');
    assert.match(rest, /^HTTP\/1\.1 200 OK\r\n/, path);
    const body = rest.slice(rest.indexOf('\r\n\r\n') + 4);
    assert.ok(
      !body.endsWith('0\r\n\r\n'),
      `${path}: no last chunk after a cut body: ${JSON.stringify(rest)}`,
    );
    if (path === '/cut-length') assert.equal(body, 'only this');
  }
});

test('egress hooks: a block is a 403, a throw a 5xx without its message; the connection serves on', async () => {
  const c = await rawClient(hooked.proxy.address());
  await c.write('GET http://blocked.invalid/ HTTP/1.1\r\nHost: blocked.invalid\r\n\r\n');
  let r = await c.response();
  assert.equal(r.status, 403, r.head);
  await c.write('GET http://throws.invalid/ HTTP/1.1\r\nHost: throws.invalid\r\n\r\n');
  r = await c.response();
  assert.ok(r.status >= 500, r.head);
  assert.doesNotMatch(r.body.toString(), /secret/);
  await c.write(get('/len?after'));
  await expectBody(c, '/len?after');
  await c.write('GET http://slow.invalid/len?slow HTTP/1.1\r\nHost: slow.invalid\r\n\r\n');
  await expectBody(c, '/len?slow');
});

test('a client that leaves while the egress hook runs: nothing is sent upstream', async () => {
  const heads = up.heads.length;
  // Abandoned requests to the slow host; the slow test before this one may still be writing
  // its own ('done') record to the same host.
  const gone = (): number =>
    hooked.auditRecords().filter((r) => r.target === 'slow.invalid:80' && r.close_reason === 'client_closed')
      .length;
  const audited = gone();
  // A reset only: a half-closed client (FIN) still gets its response (issue 19).
  for (const leave of [(c: RawClient) => c.socket.resetAndDestroy()]) {
    const c = await rawClient(hooked.proxy.address());
    const calls = slowHookCalls;
    await c.write('GET http://slow.invalid/len?gone HTTP/1.1\r\nHost: slow.invalid\r\n\r\n');
    await waitUntil(() => slowHookCalls > calls, 'the egress hook called for this client');
    leave(c);
  }
  await waitUntil(() => gone() === audited + 1, 'the abandoned request audited as client_closed');
  await new Promise((r) => setTimeout(r, 400)); // the hooks have answered by now
  assert.equal(up.heads.length, heads, 'no request reached the upstream');
});

test('pipelining far ahead (the socket is paused) and reading slowly: every response, in order', async () => {
  const c = await rawClient(app.proxy.address());
  let batch = get('/big');
  const n = 400;
  for (let i = 0; i < n; i++) batch += get(`/len?${i}`);
  assert.ok(batch.length > 8 * 2048, 'more than the proxy holds unread');
  c.socket.pause(); // the 3 MiB response backs up into the proxy
  await c.write(batch);
  await new Promise((r) => setTimeout(r, 200));
  c.socket.resume();
  const big = await c.response({ timeoutMs: 10_000 });
  assert.equal(big.body.length, 3 << 20);
  for (let i = 0; i < n; i++) await expectBody(c, `/len?${i}`);
  assert.equal(c.ended, false);
});

test('a client that resets while the proxy waits for it to read: the upstream exchange is dropped', async () => {
  for (const leave of [(c: RawClient) => c.socket.resetAndDestroy()]) {
    const c = await rawClient(app.proxy.address());
    c.socket.pause(); // never reads: the proxy's writes back up
    const closedBefore = up.count.closed;
    const audited = app.auditRecords().length;
    await c.write(get('/endless'));
    await new Promise((r) => setTimeout(r, 300));
    leave(c);
    await waitUntil(() => up.count.closed > closedBefore, 'the upstream connection closed');
    const records = await app.waitForAudit(audited + 1);
    assert.equal(records.at(-1)?.close_reason, 'client_closed');
    c.destroy();
  }
});

test('bytes outside ASCII in heads pass through unchanged both ways', async () => {
  const c = await rawClient(app.proxy.address());
  await c.write(Buffer.from(get('/latin1', 'X-8bit: caf\xe9 \xff\r\n'), 'latin1'));
  const r = await c.response();
  assert.equal(
    Buffer.from(r.headers.get('x-back') ?? '', 'latin1').toString('hex'),
    Buffer.from('caf\xe9 \xff\xe9', 'latin1').toString('hex'),
  );
  const seen = Buffer.from(up.heads.at(-1) ?? '', 'latin1');
  assert.ok(
    seen.includes(Buffer.from('X-8bit: caf\xe9 \xff\r\n', 'latin1')),
    'the upstream got the same bytes',
  );
});

test('hop-by-hop request fields are not forwarded by the lean path', async () => {
  const c = await rawClient(app.proxy.address());
  await c.write(
    get(
      '/headers',
      'Connection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nTE: trailers\r\nX-Kept: yes\r\n',
    ),
  );
  const r = await c.response();
  const head = r.body.toString('latin1');
  assert.match(head, /\r\nX-Kept: yes\r\n/);
  assert.doesNotMatch(head, /x-private|keep-alive|proxy-|\r\nte:|\r\nconnection:/i);
});
