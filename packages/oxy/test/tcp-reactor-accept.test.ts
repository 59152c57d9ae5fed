/**
 * A `tcp` endpoint with a literal target and nothing to decide per connection is accepted on the
 * addon's reactor thread (`onramps/tcp/reactor-accept.ts`): JS hears of each connection once, as
 * a record of a batch, or adopts it after 50 ms. These check that nothing of the raw accept's
 * behaviour is lost on the way: one audit record per connection with the client's address, the
 * metrics, a refused upstream (reset, audited), blocked CIDRs (the raw path refuses), a drain
 * with tunnels JS has and has not heard of, and many concurrent connections with none lost.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { renderMetrics } from 'foundations/telemetry';
import type { AuditRecord } from '../src/audit.ts';
import { spliceAvailable } from '../src/flows/stream/splice.ts';
import { reactorAcceptStats } from '../src/onramps/tcp/reactor-accept.ts';
import {
  type AppUnderTest,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

const skip = !spliceAvailable && 'the native addon is not built';
const echo = await startTcpEcho();
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  await echo.close();
});

async function start(
  target: string,
  egress: object = {},
  audit = true,
  tcp: object = {},
): Promise<AppUnderTest> {
  const app = await startApp(hooksApp({}), {
    settings: {
      endpoints: { main: {}, raw: { protocol: 'tcp', tcp: { target, ...tcp } } },
      ...(Object.keys(egress).length === 0 ? {} : { egress }),
      ...(audit ? {} : { audit: { output: 'off' } }),
    },
  });
  opened.push(app);
  // libuv registers the listening socket on the loop's next poll, and only then can the addon
  // take it out of libuv's set: a connection that came first would be served the raw way.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  return app;
}

function dial(app: AppUnderTest | string): net.Socket {
  const [host, port] = (typeof app === 'string' ? app : app.address('raw')).split(':');
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  s.on('error', () => {});
  return s;
}

async function metric(name: string, endpoint: string): Promise<number> {
  const text = await renderMetrics();
  const m = new RegExp(`^\\w*${name}\\{[^}]*endpoint="${endpoint}"[^}]*\\} (\\d+)`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

const tunnels = (app: AppUnderTest): AuditRecord[] =>
  app.auditRecords().filter((r) => r.kind === 'tunnel') as AuditRecord[];

async function exchange(app: AppUnderTest, text: string): Promise<number> {
  const s = dial(app);
  await once(s, 'connect');
  const port = s.localPort as number;
  s.write(text);
  assert.equal((await readBytes(s, text.length)).toString(), text);
  s.end();
  await once(s, 'close');
  return port;
}

test('each connection is one audit record with its client, status, bytes and metrics', { skip }, async () => {
  const app = await start(echo.authority);
  const before = reactorAcceptStats.records + reactorAcceptStats.adopted;
  const total = await metric('ingress_connections_total', 'raw');
  const ports = await Promise.all(['a', 'bb', 'ccc', 'dddd'].map((t) => exchange(app, t)));
  await waitUntil(() => tunnels(app).length === 4, 'four records');
  // Ended within 50 ms of their connect (a record) or adopted after it (a loaded machine).
  assert.equal(
    reactorAcceptStats.records + reactorAcceptStats.adopted - before,
    4,
    'the reactor thread accepted them',
  );
  const recs = tunnels(app);
  assert.deepEqual(recs.map((r) => r.client).sort(), ports.map((p) => `127.0.0.1:${p}`).sort());
  for (const r of recs) {
    assert.equal(r.peer, r.client);
    assert.equal(r.status, 200);
    assert.equal(r.upstream, echo.authority);
    assert.equal(r.target, echo.authority);
    assert.equal(r.close_reason, 'done');
    assert.deepEqual(r.decisions, ['egress:direct']);
    assert.equal(r.bytes_up, r.bytes_down);
    assert.ok(typeof r.duration_ms === 'number' && r.duration_ms >= 0 && r.duration_ms < 5000);
  }
  assert.deepEqual(recs.map((r) => r.bytes_up).sort(), [1, 2, 3, 4]);
  assert.equal((await metric('ingress_connections_total', 'raw')) - total, 4);
  assert.equal(await metric('ingress_connections_active', 'raw'), 0);
});

test('a refused upstream resets the client and is audited as the raw path audits it', { skip }, async () => {
  const app = await start('127.0.0.1:1');
  const before = reactorAcceptStats.records;
  const s = dial(app);
  s.write('nobody there');
  const [err] = await Promise.race([once(s, 'error'), once(s, 'close').then(() => [null])]);
  assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
  await waitUntil(() => tunnels(app).length === 1, 'the record');
  const [rec] = tunnels(app) as [AuditRecord];
  assert.equal(rec.close_reason, 'OXY_ERR_CONNECT_REFUSED');
  assert.equal(rec.status, 502);
  assert.equal(rec.bytes_up, 0);
  assert.equal(reactorAcceptStats.records - before, 1);
});

test('a blocked target keeps the raw accept, which refuses each connection', { skip }, async () => {
  const app = await start(echo.authority, { blocked_cidrs: ['127.0.0.0/8'] });
  const before = reactorAcceptStats.records;
  const s = dial(app);
  const [err] = await Promise.race([once(s, 'error'), once(s, 'close').then(() => [null])]);
  assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
  await waitUntil(() => tunnels(app).length === 1, 'the record');
  assert.equal(tunnels(app)[0]?.close_reason, 'OXY_ERR_EGRESS_BLOCKED');
  assert.equal(reactorAcceptStats.records, before, 'not accepted on the reactor thread');
});

test('a long tunnel is adopted: counted active, then recorded once', { skip }, async () => {
  const app = await start(echo.authority);
  const adopted = reactorAcceptStats.adopted;
  const s = dial(app);
  s.write('long');
  assert.equal((await readBytes(s, 4)).toString(), 'long');
  await waitUntil(() => reactorAcceptStats.adopted > adopted, 'the adoption');
  assert.equal(await metric('ingress_connections_active', 'raw'), 1);
  assert.equal(app.proxy.runtime.connections.size, 1);
  s.write('!');
  assert.equal((await readBytes(s, 1)).toString(), '!');
  s.end();
  await once(s, 'close');
  await waitUntil(() => tunnels(app).length === 1, 'the record');
  const [rec] = tunnels(app) as [AuditRecord];
  assert.equal(rec.bytes_up, 5);
  assert.equal(rec.close_reason, 'done');
  assert.ok((rec.duration_ms as number) >= 50);
  assert.equal(await metric('ingress_connections_active', 'raw'), 0);
});

test('a drain waits for tunnels JS has not heard of, and ends them at its deadline', {
  skip,
  timeout: 10000,
}, async () => {
  const app = await start(echo.authority);
  const addr = app.address('raw');
  // One that ends by itself during the drain, one still open at its deadline; both fresh
  // (usually not yet announced) when the drain starts.
  const ending = dial(app);
  const held = dial(app);
  await Promise.all([once(ending, 'connect'), once(held, 'connect')]);
  held.write('held');
  assert.equal((await readBytes(held, 4)).toString(), 'held');
  const heldEnd = once(held, 'end');
  const draining = app.proxy.drain(400);
  await new Promise((r) => setTimeout(r, 30));
  ending.write('bye');
  assert.equal((await readBytes(ending, 3)).toString(), 'bye');
  ending.end();
  await draining;
  await heldEnd;
  held.destroy();
  await waitUntil(() => tunnels(app).length === 2, 'two records');
  const reasons = tunnels(app)
    .map((r) => `${r.bytes_up}:${r.close_reason}`)
    .sort();
  assert.deepEqual(reasons, ['3:done', '4:drained']);
  // Nothing is accepted any more.
  const late = dial(addr);
  const [err] = await Promise.race([once(late, 'error'), once(late, 'connect').then(() => [null])]);
  assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNREFUSED');
});

test('many concurrent connections: none lost, one record each', { skip, timeout: 30000 }, async () => {
  const app = await start(echo.authority);
  const total = await metric('ingress_connections_total', 'raw');
  const n = 400;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      await exchange(app, `m${i};`);
    }
  };
  await Promise.all(Array.from({ length: 48 }, worker));
  await waitUntil(() => tunnels(app).length === n, `${n} records`, 10000);
  const up = tunnels(app).reduce((a, r) => a + (r.bytes_up as number), 0);
  const want = Array.from({ length: n }, (_, i) => `m${i};`.length).reduce((a, b) => a + b, 0);
  assert.equal(up, want);
  assert.ok(tunnels(app).every((r) => r.close_reason === 'done'));
  assert.equal((await metric('ingress_connections_total', 'raw')) - total, n);
  assert.equal(await metric('ingress_connections_active', 'raw'), 0);
});

/** The sum of a metric's samples whose labels match `labels` (a regexp on the label text). */
async function metricSum(name: string, labels: RegExp): Promise<number> {
  let sum = 0;
  for (const line of (await renderMetrics()).split('\n')) {
    const m = new RegExp(`^\\w*${name}(?:\\{([^}]*)\\})? ([0-9.e+]+)$`).exec(line);
    if (m !== null && labels.test(m[1] ?? '')) sum += Number(m[2]);
  }
  return sum;
}

test('with nothing to see the contexts (no audit, hooks or ext), a record is its metrics alone', {
  skip,
}, async () => {
  const app = await start(echo.authority, {}, false);
  const refused = await start('127.0.0.1:1', {}, false);
  const before = {
    total: await metric('ingress_connections_total', 'raw'),
    up: await metricSum('tunnel_bytes_total', /direction="up"/),
    down: await metricSum('tunnel_bytes_total', /direction="down"/),
    tunnels: await metricSum('tunnel_duration_seconds_count', /.*/),
    failed: await metricSum('http_requests_failed_total', /status="502"/),
    connectFailed: await metricSum('egress_connect_failed_total', /OXY_ERR_CONNECT_REFUSED/),
  };
  const records = reactorAcceptStats.records;
  await Promise.all(['abc', 'defgh'].map((t) => exchange(app, t)));
  const s = dial(refused);
  const [err] = await Promise.race([once(s, 'error'), once(s, 'close').then(() => [null])]);
  assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
  await waitUntil(() => reactorAcceptStats.records - records === 3, 'three records');
  assert.equal((await metric('ingress_connections_total', 'raw')) - before.total, 3);
  assert.equal((await metricSum('tunnel_bytes_total', /direction="up"/)) - before.up, 8);
  assert.equal((await metricSum('tunnel_bytes_total', /direction="down"/)) - before.down, 8);
  assert.equal((await metricSum('tunnel_duration_seconds_count', /.*/)) - before.tunnels, 2);
  assert.equal(
    (await metricSum('http_requests_failed_total', /status="502"/)) - before.failed,
    0,
    'a tcp endpoint answers no HTTP',
  );
  assert.equal(
    (await metricSum('egress_connect_failed_total', /OXY_ERR_CONNECT_REFUSED/)) - before.connectFailed,
    1,
  );
  assert.equal(app.auditRecords().length, 0);
});

test('a drain ends tunnels still connecting: recorded as never connected (no 200)', {
  skip,
  timeout: 15000,
}, async () => {
  // A listener that never accepts, its backlog of one filled: later SYNs are dropped, so those
  // connects hang (as in connect.test.ts). Without smart connect: a handshake whose last ACK is
  // held leaves the connection in the listener's SYN queue, not its full accept queue.
  const peer = spawn(process.execPath, [
    '-e',
    "const s=require('net').createServer().listen({port:0,host:'127.0.0.1',backlog:1},()=>{" +
      "process.stdout.write(s.address().port+'\\n',()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,30000))})",
  ]);
  after(() => peer.kill());
  const [line] = (await once(peer.stdout, 'data')) as [Buffer];
  const app = await start(`127.0.0.1:${Number(line.toString().trim())}`, {}, true, { smart_connect: false });
  const clients = Array.from({ length: 4 }, () => dial(app));
  await Promise.all(clients.map((c) => once(c, 'connect')));
  await new Promise((r) => setTimeout(r, 100));
  await app.proxy.drain(100);
  for (const c of clients) c.destroy();
  await waitUntil(() => tunnels(app).length === 4, 'four records');
  const recs = tunnels(app);
  assert.ok(recs.every((r) => r.close_reason === 'drained'));
  const hung = recs.filter((r) => r.status === 0);
  assert.ok(hung.length >= 1, 'at least one connect was still hanging');
  for (const r of hung) assert.equal(r.bytes_down, 0);
});

test('a tunnel announced while the JS thread is busy with a drain is adopted, drained and recorded', {
  skip,
  timeout: 10000,
}, async () => {
  const app = await start(echo.authority);
  const held = dial(app);
  await once(held, 'connect');
  held.write('busy');
  assert.equal((await readBytes(held, 4)).toString(), 'busy');
  const heldEnd = once(held, 'end');
  const adopted = reactorAcceptStats.adopted;
  // The drain stops the listener with the tunnel unannounced; the JS thread then stays busy past
  // the announcement (50 ms after the connect), so the listener's news and the tunnel's
  // adoption reach JS together, the listener's first (before: the listener let go of its owner,
  // the adoption failed, the tunnel ended with no record and the drain never ended).
  const draining = app.proxy.drain(400);
  const until = performance.now() + 150;
  while (performance.now() < until) {
    // busy: the reactor thread announces the tunnel meanwhile
  }
  await draining;
  await heldEnd;
  held.destroy();
  await waitUntil(() => tunnels(app).length === 1, 'the record');
  assert.ok(reactorAcceptStats.adopted > adopted, 'the tunnel was adopted');
  assert.equal(app.proxy.runtime.connections.size, 0);
});

test('a connect that times out is recorded at its deadline, with the time it took, not when the next connection comes', {
  skip,
}, async () => {
  // A listener that completes no more handshakes: a stopped process's, its backlog full.
  const child = spawn(process.execPath, [
    '-e',
    "const s=require('net').createServer();s.listen({host:'127.0.0.1',port:0,backlog:1},()=>console.log(s.address().port))",
  ]);
  after(() => child.kill('SIGKILL'));
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  child.kill('SIGSTOP');
  const fill: net.Socket[] = [];
  for (let i = 0; i < 4; i++) fill.push(net.connect(port, '127.0.0.1').on('error', () => {}));
  after(() => {
    for (const s of fill) s.destroy();
  });
  await new Promise((r) => setTimeout(r, 200));
  const app = await start(`127.0.0.1:${port}`, { blocked_cidrs: [], connect_timeout: '500ms' });
  const s = dial(app);
  const t0 = performance.now();
  await new Promise((r) => s.on('close', r)); // reset at the deadline
  // Nothing else connects: the record must come on its own, soon after the deadline.
  await waitUntil(() => tunnels(app).length === 1, 'the connect timeout’s record', 1500);
  const waited = performance.now() - t0;
  const rec = tunnels(app)[0] as AuditRecord;
  assert.equal(rec.close_reason, 'OXY_ERR_CONNECT_TIMEOUT');
  assert.ok(rec.duration_ms >= 490 && rec.duration_ms < 700, `duration_ms ${rec.duration_ms}`);
  assert.ok(waited < 1500, `recorded ${waited} ms after the connect`);
});
