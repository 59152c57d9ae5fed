/**
 * An `http` endpoint accepted on the addon's reactor thread in connect mode
 * (`onramps/http1/reactor-connect.ts`): the reactor reads each request head, JS decides each
 * CONNECT with today's policy, and the reactor carries the tunnel; anything else is handed back
 * and served as if Node had accepted it. These check that the path changes nothing a client,
 * an operator or an app can see: the same audit records, request-end events (the access log) and
 * metrics as with the path off (`OXY_REACTOR_ACCEPT=0`); the same answers to blocked targets,
 * refused connects, a hook's block and bad heads; GET, early data, slow heads and the HTTP/2
 * preface served; a drain with tunnels open.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { after, test } from 'node:test';
import { renderMetrics } from 'foundations/telemetry';
import type { AuditRecord } from '../src/audit.ts';
import type { RequestContext } from '../src/context/contexts.ts';
import { spliceAvailable } from '../src/flows/stream/splice.ts';
import { ConnectDirective, type RequestEndInfo } from '../src/index.ts';
import { reactorConnectStats } from '../src/onramps/http1/reactor-connect.ts';
import {
  type AppUnderTest,
  connectTunnel,
  connectTunnelH2,
  curl,
  hooksApp,
  randomUint32,
  rawConnect,
  readBytes,
  readUntil,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  waitForClose,
  waitUntil,
} from '../src/testing/index.ts';

const skip = !spliceAvailable && 'the native addon is not built';
const echo = await startTcpEcho();
const upstream = await startHttpUpstream({ '/hello': { body: 'hello, handed back' } });
after(async () => {
  await echo.close();
  await upstream.close();
});

/** The request-end events of every app started here, by app. */
const ends = new Map<AppUnderTest, RequestEndInfo[]>();

async function start(reactor: boolean, settings: Record<string, unknown> = {}): Promise<AppUnderTest> {
  const seen: RequestEndInfo[] = [];
  if (!reactor) process.env.OXY_REACTOR_ACCEPT = '0';
  try {
    const app = await startApp(
      hooksApp({
        httpRequest: {
          handleProxyConnectRequest: (head) =>
            head.authority.startsWith('denied.')
              ? ConnectDirective.block(407, 'no denied.*')
              : ConnectDirective.allow(),
          handleRequestEnd: (info: RequestEndInfo, _ctx: RequestContext) => {
            seen.push(info);
          },
        },
      }),
      { settings: { egress: { blocked_cidrs: ['10.0.0.0/8'], connect_timeout: '2s' }, ...settings } },
    );
    ends.set(app, seen);
    // libuv registers the listening socket on the loop's next poll; only then can the addon take
    // it out of libuv's set (a connection that came first is served by Node).
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    return app;
  } finally {
    delete process.env.OXY_REACTOR_ACCEPT;
  }
}

async function metrics(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await renderMetrics()).split('\n')) {
    const m = /^(\S+\{[^}]*endpoint="main"[^}]*\}|[a-z_]*tunnel_bytes_total\S*) (\d+(?:\.\d+)?)$/.exec(line);
    if (m !== null && !/duration|seconds/.test(m[1] as string)) out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) d[k] = v - (before.get(k) ?? 0);
  return d;
}

/** An audit record without what differs between any two runs (ids, ports, times). */
function comparable(r: AuditRecord): Record<string, unknown> {
  const { conn_id, request_id, client, peer, duration_ms, ts, time, ...rest } = r as AuditRecord &
    Record<string, unknown>;
  return { ...rest, client: String(client).replace(/:\d+$/, ''), peer: String(peer).replace(/:\d+$/, '') };
}

function comparableEnd(e: RequestEndInfo): Record<string, unknown> {
  const { durationMs, connectMs, firstByteMs, timings, ...rest } = e as RequestEndInfo &
    Record<string, unknown>;
  return rest;
}

/** Tunnels, a refused connect, a blocked target and a hook's block: what the client saw. */
async function scenario(app: AppUnderTest): Promise<unknown[]> {
  const seen: unknown[] = [];
  const t = await connectTunnel(app.address(), echo.authority);
  t.socket.write('abc');
  seen.push(t.status, (await readBytes(t.socket, 3)).toString());
  t.socket.end();
  await once(t.socket, 'close');
  for (const target of ['127.0.0.1:1', '10.1.2.3:80', `denied.example:${echo.port}`]) {
    const r = rawConnect(app.address(), `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    r.on('error', () => {});
    const chunks: Buffer[] = [];
    r.on('data', (c: Buffer) => chunks.push(c));
    await once(r, 'close');
    const answer = Buffer.concat(chunks).toString('latin1');
    seen.push(answer.split('\r\n')[0], answer.slice(answer.indexOf('\r\n\r\n') + 4));
  }
  await app.waitForAudit(4);
  return seen;
}

test('the path on and off: the same answers, audit records, request-end events and metrics', {
  skip,
}, async () => {
  const results = [];
  for (const reactor of [true, false]) {
    const app = await start(reactor);
    const before = await metrics();
    const connects = reactorConnectStats.connects;
    const seen = await scenario(app);
    await waitUntil(() => (ends.get(app) ?? []).length === 4, 'four request ends');
    const m = delta(before, await metrics());
    const audit = app.auditRecords().map(comparable);
    await app.stop();
    assert.equal(reactorConnectStats.connects - connects, reactor ? 4 : 0, 'the path taken');
    const byTarget = (a: { target?: unknown }, b: { target?: unknown }): number =>
      String(a.target).localeCompare(String(b.target));
    results.push({
      seen,
      audit: audit.sort(byTarget),
      ends: (ends.get(app) ?? []).map(comparableEnd).sort(byTarget),
      metrics: m,
    });
  }
  const [on, off] = results as [(typeof results)[0], (typeof results)[0]];
  assert.deepEqual(on.seen, off.seen);
  assert.deepEqual(on.seen.slice(0, 2), [200, 'abc']);
  assert.deepEqual(
    on.seen.filter((_, i) => i >= 2 && i % 2 === 0),
    ['HTTP/1.1 502 Bad Gateway', 'HTTP/1.1 403 Forbidden', 'HTTP/1.1 407 Proxy Authentication Required'],
  );
  assert.equal(on.audit.length, 4);
  assert.deepEqual(on.audit, off.audit);
  assert.deepEqual(on.ends, off.ends);
  assert.ok(Object.keys(on.metrics).length >= 5, JSON.stringify(on.metrics));
  assert.deepEqual(on.metrics, off.metrics);
});

test('GET on the same endpoint is handed back and served, through curl', { skip }, async () => {
  const app = await start(true, { egress: { blocked_cidrs: [] } });
  after(() => app.stop());
  const back = reactorConnectStats.handedBack;
  const r = await curl(['-s', '-x', `http://${app.address()}`, `${upstream.origin}/hello`]);
  assert.equal(r.stdout, 'hello, handed back');
  assert.equal(reactorConnectStats.handedBack - back, 1);
  // And curl's own CONNECT through the same endpoint takes the reactor's path.
  const connects = reactorConnectStats.connects;
  const t = await curl(['-s', '-p', '-x', `http://${app.address()}`, `${upstream.origin}/hello`]);
  assert.equal(t.stdout, 'hello, handed back');
  assert.equal(reactorConnectStats.connects - connects, 1);
});

async function exchange(s: net.Socket, head: string): Promise<string> {
  const got = await readUntil(s, '\r\n\r\n');
  return got.slice(0, head.length);
}

test('heads sent with the connection, after it, and in pieces within the deadline are carried on the reactor', {
  skip,
}, async () => {
  const app = await start(true, { egress: { blocked_cidrs: [] } });
  after(() => app.stop());
  const head = `CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\n`;
  const pause = () => new Promise((r) => setTimeout(r, 60));
  const back = reactorConnectStats.handedBack;
  const connects = reactorConnectStats.connects;
  // At once (usually read at the accept), after a pause (read when the socket turns readable),
  // and in two pieces (the first read leaves it watched for the rest).
  const sends: ((s: net.Socket) => Promise<void>)[] = [
    async (s) => void s.write(head),
    async (s) => {
      await pause();
      s.write(head);
    },
    async (s) => {
      await pause();
      s.write(head.slice(0, 20));
      await pause();
      s.write(head.slice(20));
    },
  ];
  for (const [i, send] of sends.entries()) {
    const s = rawConnect(app.address());
    await once(s, 'connect');
    await send(s);
    assert.equal(await exchange(s, 'HTTP/1.1 200'), 'HTTP/1.1 200', `client ${i}`);
    s.write(`ping${i}`);
    assert.equal((await readBytes(s, 5)).toString(), `ping${i}`);
    s.destroy();
  }
  assert.equal(reactorConnectStats.handedBack - back, 0, 'none handed back');
  assert.equal(reactorConnectStats.connects - connects, 3, 'all three connected by the reactor');
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'all gone');
});

test('a head in two pieces past the deadline, and early data after the head, are handed back', {
  skip,
}, async () => {
  const app = await start(true, { egress: { blocked_cidrs: [] } });
  after(() => app.stop());
  let back = reactorConnectStats.handedBack;
  const slow = rawConnect(app.address(), `CONNECT ${echo.authority} HTTP/1.1\r\n`);
  await new Promise((r) => setTimeout(r, 700)); // past the reactor's 500 ms
  await waitUntil(() => reactorConnectStats.handedBack > back, 'the slow head handed back');
  slow.write(`Host: ${echo.authority}\r\n\r\n`);
  assert.equal(await exchange(slow, 'HTTP/1.1 200'), 'HTTP/1.1 200');
  slow.write('slow');
  assert.equal((await readBytes(slow, 4)).toString(), 'slow');
  slow.destroy();
  back = reactorConnectStats.handedBack;
  const early = rawConnect(app.address(), `CONNECT ${echo.authority} HTTP/1.1\r\nHost: x\r\n\r\nearly`);
  assert.equal(await exchange(early, 'HTTP/1.1 200'), 'HTTP/1.1 200');
  assert.equal((await readBytes(early, 5)).toString(), 'early');
  assert.equal(reactorConnectStats.handedBack - back, 1);
  early.destroy();
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'both gone');
});

test('bad heads get the on-ramp answers of today', { skip }, async () => {
  const on = await start(true);
  const off = await start(false);
  after(() => Promise.all([on.stop(), off.stop()]));
  const heads = [
    'CONNECT nowhere HTTP/1.1\r\nHost: nowhere\r\n\r\n', // no port
    'CONNECT a.example:443 HTTP/1.1\r\nBad header line\r\n\r\n', // malformed field
    'CONNECT a.example:443 HTTP/1.1\r\n\r\n', // HTTP/1.1 without Host
    'CONNECT a.example:443 HTTP/1.1\r\nHost: a\r\nExpect: nothing\r\n\r\n',
  ];
  // Over the reactor's 8 KiB (not the endpoint's limit): handed back, then refused as any
  // blocked target is.
  const long = `CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: a\r\nX: ${'y'.repeat(9000)}\r\n\r\n`;
  for (const head of [...heads, long]) {
    const answers: string[] = [];
    for (const app of [on, off]) {
      const s = rawConnect(app.address(), head);
      s.on('error', () => {});
      answers.push((await readUntil(s, '\r\n')).split('\r\n')[0] as string);
      s.destroy();
    }
    assert.equal(answers[0], answers[1], head.slice(0, 60));
    assert.match(answers[0] as string, head === long ? /^HTTP\/1\.1 403 / : /^HTTP\/1\.1 4\d\d /);
  }
});

test('the HTTP/2 preface (prior knowledge) is handed back to HTTP/2', { skip }, async () => {
  const app = await start(true, { egress: { blocked_cidrs: [] } });
  after(() => app.stop());
  const back = reactorConnectStats.handedBack;
  const t = await connectTunnelH2(app.address(), echo.authority);
  assert.equal(t.status, 200);
  t.stream.write('h2');
  assert.equal((await readBytes(t.stream, 2)).toString(), 'h2');
  t.stream.destroy();
  t.session.close();
  assert.equal(reactorConnectStats.handedBack - back, 1);
});

test('long tunnels are adopted; a drain ends them and the heads still being read', { skip }, async () => {
  const app = await start(true, { egress: { blocked_cidrs: [] } });
  const adopted = reactorConnectStats.adopted;
  const tunnels = [];
  for (let i = 0; i < 3; i++) {
    const t = await connectTunnel(app.address(), echo.authority);
    assert.equal(t.status, 200);
    t.socket.on('error', () => {});
    t.socket.write('x');
    await readBytes(t.socket, 1);
    tunnels.push(t.socket);
  }
  await waitUntil(() => reactorConnectStats.adopted - adopted === 3, 'three adopted');
  assert.equal(app.proxy.runtime.connections.size, 3);
  const silent = rawConnect(app.address());
  silent.on('error', () => {});
  await once(silent, 'connect');
  const ended = [...tunnels, silent].map((s) => waitForClose(s));
  await app.proxy.drain(100);
  await Promise.all(ended);
  // The silent client's server side closes once its FIN is answered.
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'no connection left');
  const records = (await app.waitForAudit(3)).filter((r) => r.kind === 'tunnel');
  assert.deepEqual(
    records.map((r) => r.bytes_up),
    [1, 1, 1],
  );
  await app.stop();
});

test('an adopted tunnel keeps the idle timeout', { skip }, async () => {
  const app = await start(true, {
    egress: { blocked_cidrs: [] },
    endpoints: { main: { tunnel_idle_timeout: '200ms' } },
  });
  after(() => app.stop());
  const t = await connectTunnel(app.address(), echo.authority);
  t.socket.on('error', () => {});
  const ms = await waitForClose(t.socket);
  assert.ok(ms >= 150 && ms < 2000, `closed after ${ms} ms`);
  const [rec] = await app.waitForAudit(1);
  assert.equal(rec?.close_reason, 'idle_timeout');
});

/** A CONNECT head, mutated: bytes flipped, cut, repeated or spliced with random ones. */
function mutatedHead(next: () => number, target: string): Buffer {
  const base = Buffer.from(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-A: b\r\n\r\n`, 'latin1');
  const out = Buffer.from(base);
  const kind = next() % 5;
  if (kind === 0) for (let i = 0; i < 3; i++) out[next() % out.length] = next() & 0xff;
  if (kind === 1) return out.subarray(0, next() % out.length);
  if (kind === 2) return Buffer.concat([out, out.subarray(0, next() % out.length)]);
  if (kind === 3) return Buffer.from(Array.from({ length: 1 + (next() % 64) }, () => next() & 0xff));
  if (kind === 4) return Buffer.concat([out.subarray(0, 8 + (next() % 20)), Buffer.from([next() & 0xff])]);
  return out;
}

test('fuzz: mutated and random heads are answered or closed; the proxy serves on, nothing leaks', {
  skip,
}, async () => {
  const app = await start(true, { egress: { blocked_cidrs: ['10.0.0.0/8'] } });
  const next = randomUint32(0x53c0);
  const before = { ...reactorConnectStats };
  const deadline = performance.now() + 4000;
  let sent = 0;
  while (performance.now() < deadline && sent < 300) {
    const batch = Array.from({ length: 10 }, () => {
      const s = rawConnect(
        app.address(),
        mutatedHead(next, next() % 2 === 0 ? '10.9.9.9:443' : echo.authority),
      );
      s.on('error', () => {});
      s.on('data', () => {});
      // Ends its side: a head cut short is answered (or the connection closed) at once.
      s.end();
      return waitForClose(s, 3000).catch(() => s.destroy());
    });
    await Promise.all(batch);
    sent += batch.length;
  }
  assert.ok(sent >= 100, `only ${sent} heads in the time`);
  // Both ways out of the reactor were taken: heads decided in JS, connections handed back.
  assert.ok(reactorConnectStats.connects > before.connects, 'some heads decided');
  assert.ok(reactorConnectStats.handedBack > before.handedBack + 50, 'many handed back');
  // Still serving, and every connection accounted for.
  const t = await connectTunnel(app.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.destroy();
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'no connection left');
  await app.stop();
});
