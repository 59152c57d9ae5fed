/**
 * `requestLog()`: one structured line per request or tunnel, alone or composed with another
 * app (whose blocks are logged too), to the framework's log by default or to a writer.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { composeApps, defineApp, RequestDecision, type RequestLogLine, requestLog } from '../src/index.ts';
import {
  type AppUnderTest,
  captureTelemetry,
  connectTunnel,
  type HttpUpstream,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  type TcpPeer,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'INFO' });
const written: RequestLogLine[] = [];

/** Blocks requests to `/secret`: the log must show its blocks too. */
const gate = defineApp({
  name: 'gate',
  version: '1.0.0',
  description: 'blocks /secret',
  start: () => ({
    httpRequest: {
      handleRequest: (head) =>
        head.path === '/secret' ? RequestDecision.block(403, 'secret') : RequestDecision.forward(),
    },
  }),
});

let composed: AppUnderTest;
let alone: AppUnderTest;
let upstream: HttpUpstream;
let echo: TcpPeer;

before(async () => {
  upstream = await startHttpUpstream({ '/x': { body: 'hello' } });
  echo = await startTcpEcho();
  composed = await startApp(composeApps(gate, requestLog({ write: (line) => written.push(line) })));
  alone = await startApp(requestLog({ filter: (info) => info.status >= 400 }));
});

after(async () => {
  tele.stop();
  await alone.stop();
  await composed.stop();
  await upstream.close();
  await echo.close();
});

async function lines(n: number): Promise<RequestLogLine[]> {
  const deadline = Date.now() + 5000;
  while (written.length < n) {
    assert.ok(Date.now() < deadline, `expected ${n} lines, got ${written.length}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return written.slice(0, n);
}

test('composed with another app: a line per forwarded, blocked and tunnelled request', async () => {
  const ok = await proxyRequest(composed.address(), `${upstream.origin}/x`);
  assert.equal(ok.status, 200);
  const blocked = await proxyRequest(composed.address(), `${upstream.origin}/secret`);
  assert.equal(blocked.status, 403);
  const t = await connectTunnel(composed.address(), echo.authority);
  t.socket.write('hi');
  assert.equal((await readBytes(t.socket, 2)).toString(), 'hi');
  t.socket.end();
  const [a, b, c] = await lines(3);
  assert.match(a!.request_id, /^r-/);
  assert.match(a!.conn_id, /^c-/);
  assert.match(a!.client, /^127\.0\.0\.1:\d+$/);
  assert.deepEqual(
    [a!.kind, a!.method, a!.target, a!.status, a!.upstream, a!.bytes_down, a!.close_reason, a!.error],
    ['forward', 'GET', `127.0.0.1:${upstream.port}`, 200, `127.0.0.1:${upstream.port}`, 5, 'done', undefined],
  );
  assert.ok(a!.duration_ms >= (a!.first_byte_ms ?? 0));
  assert.deepEqual([b!.status, b!.upstream, b!.close_reason, b!.error], [403, null, 'blocked', 'secret']);
  assert.deepEqual(
    [c!.kind, c!.method, c!.status, c!.bytes_up, c!.bytes_down, c!.upstream],
    ['connect', 'CONNECT', 200, 2, 2, echo.authority],
  );
});

test('by default a line goes to the log at INFO, in the request context; the filter keeps failures only', async () => {
  tele.clear();
  const ok = await proxyRequest(alone.address(), `${upstream.origin}/x`);
  assert.equal(ok.status, 200);
  const missing = await proxyRequest(alone.address(), `${upstream.origin}/nothing-here`);
  assert.equal(missing.status, 404);
  const deadline = Date.now() + 5000;
  while (!tele.logs.some((l) => l.msg === 'request')) {
    assert.ok(Date.now() < deadline, 'a request line is logged');
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 50));
  const logged = tele.logs.filter((l) => l.msg === 'request');
  assert.equal(logged.length, 1, 'the 200 was filtered out');
  const rec = logged[0]!;
  assert.equal(rec.level, 'INFO');
  assert.equal(rec.fields.status, 404);
  assert.equal(rec.fields.target, `127.0.0.1:${upstream.port}`);
  assert.equal(rec.fields.endpoint, 'main');
  assert.equal(typeof rec.fields.duration_ms, 'number');
});
