/**
 * A `tcp` endpoint whose connections all go whole to the addon accepts them raw
 * (`onramps/tcp/raw-accept.ts`): no `net.Socket` per connection, the same audit record and
 * metrics as a socket's connection, a socket made late when the route needs JS after all, and a
 * drain that ends a raw tunnel at its deadline.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { renderMetrics } from 'foundations/telemetry';
import type { AuditRecord } from '../src/audit.ts';
import { spliceAvailable } from '../src/flows/stream/splice.ts';
import {
  type AppUnderTest,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

const echo = await startTcpEcho();
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  await echo.close();
});

async function start(hooks: Parameters<typeof hooksApp>[0], target: string) {
  const app = await startApp(hooksApp(hooks), {
    settings: { endpoints: { main: {}, raw: { protocol: 'tcp', tcp: { target } } } },
  });
  opened.push(app);
  return app;
}

function dial(app: AppUnderTest): net.Socket {
  const [host, port] = app.address('raw').split(':');
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  s.on('error', () => {});
  return s;
}

/** Accepted sockets Node emitted on the endpoint's server (none when accepted raw). */
function countSockets(app: AppUnderTest): { readonly n: number } {
  const seen = { n: 0 };
  app.proxy.servers.get('raw')?.on('connection', () => seen.n++);
  return seen;
}

async function metric(name: string, endpoint: string): Promise<number> {
  const text = await renderMetrics();
  const m = new RegExp(`^\\w*${name}\\{[^}]*endpoint="${endpoint}"[^}]*\\} (\\d+)`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

async function metricBecomes(name: string, endpoint: string, want: number): Promise<void> {
  const end = performance.now() + 3000;
  while ((await metric(name, endpoint)) !== want) {
    if (performance.now() > end)
      assert.fail(`${name} stayed at ${await metric(name, endpoint)}, not ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function recordFor(app: AppUnderTest, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => app.auditRecords().some(match), 'the audit record');
  return app.auditRecords().find(match) as AuditRecord;
}

async function exchange(app: AppUnderTest, text: string): Promise<void> {
  const s = dial(app);
  s.write(text);
  assert.equal((await readBytes(s, text.length)).toString(), text);
  s.end();
  await once(s, 'close');
}

test('without hooks, connections are accepted raw: no socket, the same record and metrics', {
  skip: !spliceAvailable && 'the native addon is not built',
}, async () => {
  const app = await start({}, echo.authority);
  const sockets = countSockets(app);
  const total = await metric('ingress_connections_total', 'raw');
  await Promise.all([exchange(app, 'one'), exchange(app, 'two!'), exchange(app, 'three')]);
  assert.equal(sockets.n, 0, 'no net.Socket was made');
  await waitUntil(() => app.auditRecords().filter((r) => r.kind === 'tunnel').length === 3, 'three records');
  const recs = app.auditRecords().filter((r) => r.kind === 'tunnel') as AuditRecord[];
  assert.deepEqual(recs.map((r) => r.bytes_up).sort(), [3, 4, 5]);
  assert.deepEqual(recs.map((r) => r.bytes_down).sort(), [3, 4, 5]);
  for (const r of recs) {
    assert.equal(r.status, 200);
    assert.equal(r.upstream, echo.authority);
    assert.equal(r.close_reason, 'done');
    assert.deepEqual(r.decisions, ['egress:direct']);
    assert.match(r.client, /^127\.0\.0\.1:\d+$/);
  }
  assert.equal((await metric('ingress_connections_total', 'raw')) - total, 3);
  await metricBecomes('ingress_connections_active', 'raw', 0);
});

test('an ingress hook needs the socket: connections go the usual way', async () => {
  const app = await start(
    { ingress: { handleConnection: () => ({ kind: 'allow' }) as const } },
    echo.authority,
  );
  const sockets = countSockets(app);
  await exchange(app, 'hooked');
  assert.equal(sockets.n, 1);
});

test('a route the addon cannot take (a name with two addresses) gets a socket made late', {
  skip: !spliceAvailable && 'the native addon is not built',
}, async () => {
  // `localhost` resolves to 127.0.0.1 and ::1: Happy Eyeballs races them in JS.
  const app = await start({}, `localhost:${echo.port}`);
  const sockets = countSockets(app);
  await exchange(app, 'raced in JS');
  assert.equal(sockets.n, 0);
  const rec = await recordFor(app, (r) => r.kind === 'tunnel' && r.bytes_up === 11);
  assert.equal(rec.bytes_down, 11);
});

test('a drain whose deadline falls as tunnels are announced (50 ms after connect) ends every one', {
  timeout: 30000,
  skip: !spliceAvailable && 'the native addon is not built',
}, async () => {
  // Connections 1 ms apart, and a deadline 70 ms after the first: the reactor thread announces
  // some of them to JS just as the deadline's abort runs. Such a tunnel was once adopted after
  // the abort and left open (7 of 320 here).
  let open = 0;
  for (let round = 0; round < 4; round++) {
    const app = await start({}, echo.authority);
    const t0 = performance.now();
    const clients: net.Socket[] = [];
    for (let i = 0; i < 40; i++) {
      clients.push(dial(app));
      await new Promise((r) => setTimeout(r, 1));
    }
    const ended = clients.map(
      (s) =>
        new Promise<boolean>((resolve) => {
          s.once('end', () => resolve(true));
          s.once('close', () => resolve(true));
          setTimeout(() => resolve(false), 5000).unref();
        }),
    );
    await app.proxy.drain(Math.max(1, 70 - (performance.now() - t0)));
    open += (await Promise.all(ended)).filter((e) => !e).length;
    for (const s of clients) s.destroy();
  }
  assert.equal(open, 0, `${open} clients left open after the drain`);
});

test('a drain ends a raw tunnel still open at its deadline; the record says so', {
  timeout: 10000,
  skip: !spliceAvailable && 'the native addon is not built',
}, async () => {
  const app = await start({}, echo.authority);
  const s = dial(app);
  s.write('held');
  assert.equal((await readBytes(s, 4)).toString(), 'held');
  const ended = once(s, 'end');
  await app.proxy.drain(50);
  await ended;
  s.destroy();
  const rec = await recordFor(app, (r) => r.kind === 'tunnel');
  assert.equal(rec.bytes_up, 4);
  assert.equal(rec.close_reason, 'drained');
  await metricBecomes('ingress_connections_active', 'raw', 0);
});
