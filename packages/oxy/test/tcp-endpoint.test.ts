/**
 * `tcp` endpoints: every connection is a tunnel to `tcp.target` (or where the egress hook sends
 * it), carried by the same stream runner as a CONNECT: bytes and half-close both ways, the
 * addon's whole tunnel when no hook needs JS, the JS path with hooks, the blocklist, refusals
 * as resets, the audit record, and chaining through an upstream proxy.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import type { AuditRecord } from '../src/audit.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { appSettings } from '../src/proxy.ts';
import {
  type AppUnderTest,
  captureTelemetry,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';
import { connectsUnderWay, heldEcho } from './fixtures/held-upstream.ts';

const echo = await startTcpEcho();
const other = await startTcpEcho();
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  await Promise.all([echo.close(), other.close()]);
});

async function start(hooks: Parameters<typeof hooksApp>[0], raw: Record<string, unknown>, extra = {}) {
  const app = await startApp(hooksApp(hooks), {
    settings: { endpoints: { main: {}, raw: { protocol: 'tcp', ...raw } }, ...extra },
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

async function recordFor(app: AppUnderTest, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => app.auditRecords().some(match), 'the audit record');
  return app.auditRecords().find(match) as AuditRecord;
}

test('without hooks a connection is a whole tunnel to tcp.target: bytes, half-close, audit', async () => {
  const app = await start({}, { tcp: { target: echo.authority } });
  const s = dial(app);
  s.write('ping');
  assert.equal((await readBytes(s, 4)).toString(), 'ping');
  s.end('after-fin');
  assert.equal((await readBytes(s, 9)).toString(), 'after-fin');
  await once(s, 'close');
  const rec = await recordFor(app, (r) => r.target === echo.authority);
  assert.equal(rec.kind, 'tunnel');
  assert.equal(rec.upstream, echo.authority);
  assert.equal(rec.status, 200);
  assert.equal(rec.bytes_up, 13);
  assert.equal(rec.bytes_down, 13);
  assert.deepEqual(rec.decisions, ['egress:direct']);
  assert.match(rec.client, /^127\.0\.0\.1:\d+$/);
});

test('an egress hook routes the connection; the app pipeline sees its bytes (the JS path)', async () => {
  const seen: string[] = [];
  const app = await start(
    {
      egress: { handleConnection: () => EgressDecision.direct({ host: '127.0.0.1', port: other.port }) },
      tunnel: {
        getAppTunnelPipeline: (ctx) => async (client, upstream) => {
          seen.push(ctx.kind);
          client.pipe(upstream);
          upstream.pipe(client);
          await once(client, 'end');
          upstream.end();
          await once(upstream, 'end');
        },
      },
    },
    { tcp: { target: null } },
  );
  const s = dial(app);
  s.write('routed');
  assert.equal((await readBytes(s, 6)).toString(), 'routed');
  s.end();
  await once(s, 'close');
  assert.deepEqual(seen, ['tcp']);
  const rec = await recordFor(app, (r) => r.upstream === other.authority);
  assert.deepEqual(rec.decisions, ['egress:direct', 'tunnel:app']);
});

test('a blocked destination, no destination and a refused one reset the client and are audited, not counted as HTTP', async () => {
  const tele = captureTelemetry();
  after(() => tele.stop());
  const count = async (name: string, labels: Record<string, string>) =>
    (await tele.metricValue(name, labels)) ?? 0;
  const httpFailed = await count('http_requests_failed_total', { endpoint: 'raw' });
  const blocked = await start(
    {},
    { tcp: { target: echo.authority } },
    { egress: { blocked_cidrs: ['127.0.0.0/8'] } },
  );
  const none = await start({}, { tcp: { target: null } });
  const refused = await start({}, { tcp: { target: '127.0.0.1:1' } });
  for (const [app, reason] of [
    [blocked, 'OXY_ERR_EGRESS_BLOCKED'],
    [none, 'OXY_ERR_NO_TARGET'],
    [refused, 'OXY_ERR_CONNECT_REFUSED'],
  ] as const) {
    const connectFailed = await count('egress_connect_failed_total', { code: reason });
    const s = dial(app);
    s.write('nothing reaches anyone');
    const [err] = await Promise.race([once(s, 'error'), once(s, 'close').then(() => [null])]);
    assert.equal((err as NodeJS.ErrnoException | null)?.code, 'ECONNRESET', reason);
    const rec = await recordFor(app, (r) => r.close_reason === reason);
    assert.equal(rec.kind, 'tunnel');
    assert.equal(rec.bytes_up, 0);
    assert.equal(rec.upstream, null, 'nothing was connected to, on the whole-tunnel path as on the JS one');
    assert.equal(await count('egress_connect_failed_total', { code: reason }), connectFailed + 1, reason);
  }
  // A tcp endpoint answers no HTTP: its failures are egress (and tunnel) counts only.
  assert.equal(await count('http_requests_failed_total', { endpoint: 'raw' }), httpFailed);
  // The endpoint still serves the next client.
  const again = dial(blocked);
  again.destroy();
});

test('through an upstream proxy the connection is a CONNECT tunnel', async () => {
  const chained = await startApp(hooksApp());
  opened.push(chained);
  const app = await start(
    {},
    { tcp: { target: echo.authority } },
    { egress: { upstream_proxy: { enabled: true, addr: chained.address() } } },
  );
  const s = dial(app);
  s.write('chain');
  assert.equal((await readBytes(s, 5)).toString(), 'chain');
  s.destroy();
  const rec = await recordFor(chained, (r) => r.kind === 'tunnel' && r.target === echo.authority);
  assert.equal(rec.status, 200);
});

test('tcp settings are checked: a bad target names its key, http keys do not apply', () => {
  const app = hooksApp();
  assert.throws(
    () =>
      appSettings(app, [
        { source: 'x.yaml', value: { endpoints: { raw: { protocol: 'tcp', tcp: { target: 'nope' } } } } },
      ]),
    /endpoints\.raw\.tcp\.target/,
  );
  assert.throws(
    () =>
      appSettings(app, [
        { source: 'x.yaml', value: { endpoints: { raw: { protocol: 'tcp', max_header_size: '1KiB' } } } },
      ]),
    /endpoints\.raw.*max_header_size/s,
  );
});

test('behind an async ingress decision no byte the client sent early is lost', async () => {
  const app = await start(
    {
      ingress: { handleConnection: async () => ({ kind: 'allow' }) as const },
      egress: { handleConnection: async (t) => EgressDecision.direct(t) },
    },
    { tcp: { target: echo.authority } },
  );
  const s = dial(app);
  s.write('sent before any decision');
  assert.equal((await readBytes(s, 24)).toString(), 'sent before any decision');
  s.destroy();
});

test('a name target and a hook that carries the bytes in JS both audit an established tunnel as 200', async () => {
  const byName = await start({}, { tcp: { target: `localhost:${echo.port}` } });
  const piped = await start(
    {
      tunnel: { getAppTunnelPipeline: () => undefined },
      egress: { handleConnection: (t) => EgressDecision.direct(t) },
    },
    { tcp: { target: echo.authority } },
  );
  for (const app of [byName, piped]) {
    const s = dial(app);
    s.write('ping');
    assert.equal((await readBytes(s, 4)).toString(), 'ping');
    s.end();
    await once(s, 'close');
    const rec = await recordFor(app, (r) => r.kind === 'tunnel');
    assert.equal(rec.status, 200, JSON.stringify(rec));
    assert.equal(rec.close_reason, 'done');
  }
});

/** Resolves when Oxy closes `s` (its FIN read), rejects after `ms`: a timer that also keeps the loop alive. */
function closedWithin(s: net.Socket, ms: number, what: string): Promise<void> {
  s.resume();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not closed within ${ms} ms`)), ms);
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    s.once('end', done); // dial() allows half-open: Oxy's FIN is an end, not yet a close
    s.once('close', done);
  });
}

test("an app's own pipeline keeps the endpoint's idle and lifetime limits, and its bytes are counted", async () => {
  const pipe: Parameters<typeof hooksApp>[0] = {
    tunnel: {
      getAppTunnelPipeline: () => async (client, upstream) => {
        client.pipe(upstream);
        upstream.pipe(client);
        await new Promise((resolve) => client.on('close', resolve));
      },
    },
  };
  const idle = await start(pipe, { tcp: { target: echo.authority }, tunnel_idle_timeout: '300ms' });
  const s = dial(idle);
  s.write('twelve bytes');
  assert.equal((await readBytes(s, 12)).toString(), 'twelve bytes');
  await closedWithin(s, 5000, 'idle'); // the pipeline never ends by itself: the idle limit closes it
  const rec = await recordFor(idle, (r) => r.kind === 'tunnel');
  assert.deepEqual([rec.close_reason, rec.bytes_up, rec.bytes_down], ['idle_timeout', 12, 12]);
  assert.ok(rec.duration_ms < 2000, `closed after ${rec.duration_ms} ms`);

  const life = await start(pipe, { tcp: { target: echo.authority }, tunnel_max_lifetime: '400ms' });
  const t = dial(life);
  const ticking = setInterval(() => t.write('x'), 50); // never idle
  await closedWithin(t, 5000, 'lifetime');
  clearInterval(ticking);
  const lifeRec = await recordFor(life, (r) => r.kind === 'tunnel');
  assert.equal(lifeRec.close_reason, 'max_lifetime');
  // The last byte up may still be on its way back when the limit closes the tunnel.
  assert.ok(lifeRec.bytes_down > 0 && lifeRec.bytes_down <= lifeRec.bytes_up, JSON.stringify(lifeRec));
});

test("bytes an upstream proxy sends with its 200 are counted as the tunnel's bytes down", async () => {
  // A proxy that answers the CONNECT and the upstream's banner in one write, as a fast chain does.
  const proxy = net.createServer((c) =>
    c.once('data', () => c.end('HTTP/1.1 200 Connection Established\r\n\r\nbanner-in-the-same-read')),
  );
  proxy.listen(0, '127.0.0.1');
  after(() => proxy.close());
  await once(proxy, 'listening');
  const addr = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  const app = await start(
    {},
    { tcp: { target: echo.authority } },
    { egress: { upstream_proxy: { enabled: true, addr } } },
  );
  const s = dial(app);
  assert.equal((await readBytes(s, 23)).toString(), 'banner-in-the-same-read');
  await closedWithin(s, 5000, 'the chained tunnel');
  const rec = await recordFor(app, (r) => r.kind === 'tunnel');
  assert.equal(rec.bytes_down, 23, JSON.stringify(rec));
});

test('the PROXY header Oxy sends is not counted as the client’s bytes up, spliced or pumped', async () => {
  for (const tunnel_splice of [true, false]) {
    const app = await start(
      {},
      { tcp: { target: echo.authority, send_proxy_protocol: 'v2' }, tunnel_splice },
      { egress: { blocked_cidrs: [] } },
    );
    const s = dial(app);
    s.end('hello');
    // The echo sends back the header (28 bytes for TCP over IPv4) and the client's 5 bytes.
    assert.equal((await readBytes(s, 33)).subarray(28).toString(), 'hello');
    const rec = await recordFor(app, (r) => r.kind === 'tunnel');
    assert.equal(rec.bytes_up, 5, `tunnel_splice: ${tunnel_splice}`);
    assert.equal(rec.bytes_down, 33, `tunnel_splice: ${tunnel_splice}`);
  }
});

test('a client reset while the upstream connect is under way brings nothing down', {
  skip: process.platform !== 'linux' ? 'needs Linux (/proc/net/tcp)' : false,
}, async () => {
  // Once, nothing listened for errors on the client's socket until it was carried: the reset
  // was an uncaught 'error', the end of the process.
  const up = await heldEcho();
  const app = await start(
    { egress: { handleConnectionEstablished: () => {} } },
    { tcp: { target: `127.0.0.1:${up.port}` } },
    { egress: { connect_timeout: '500ms' } },
  );
  const c = dial(app);
  await waitUntil(() => connectsUnderWay(up.port) > up.fillers, "Oxy's connect to the held upstream");
  c.resetAndDestroy();
  await recordFor(app, (r) => r.request_kind === 'tcp');
  const next = dial(app);
  await once(next, 'connect');
  next.destroy();
});

test('a connection the proxy refuses tells IngressHook.handleConnectionClose why, as its record does', async () => {
  const reasons: string[] = [];
  let mode: 'throw' | 'block' = 'throw';
  const app = await start(
    {
      ingress: {
        handleConnectionClose: (stats: { closeReason: string }) => void reasons.push(stats.closeReason),
      },
      egress: {
        handleConnection: () => {
          if (mode === 'throw') throw new Error('policy store down');
          return EgressDecision.block('not there');
        },
      },
    },
    { tcp: { target: echo.authority } },
  );
  for (const m of ['throw', 'block'] as const) {
    mode = m;
    const s = dial(app);
    s.write('x');
    await new Promise((r) => s.once('close', r)); // a reset
    await waitUntil(() => reasons.length === (m === 'throw' ? 1 : 2), 'the close hook');
  }
  const records = app.auditRecords().map((r) => r.close_reason);
  assert.deepEqual(reasons, records, 'the close hook and the records agree');
  assert.deepEqual(reasons, ['OXY_ERR_HOOK_FAILED', 'OXY_ERR_EGRESS_BLOCKED']);
});
