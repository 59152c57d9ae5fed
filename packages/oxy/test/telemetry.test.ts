/**
 * Telemetry of the proxy: each connection forks its log fields and trace, each request on it
 * forks again into a trace linked to the connection's; the metrics groups count what happened;
 * a drain stops accepting, lets a running tunnel go on, and closes it at the deadline.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, test } from 'node:test';
import { log } from 'foundations/telemetry';
import {
  captureTelemetry,
  connectTunnel,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'INFO' });
after(() => tele.stop());
const upstream = await startHttpUpstream({ '/a': { body: 'a' } });
const echo = await startTcpEcho();
after(() => Promise.all([upstream.close(), echo.close()]));

test('one trace per request, linked to the connection trace; hook logs carry conn and request fields', async () => {
  const proxy = await startApp(
    hooksApp({
      httpRequest: {
        handleRequest: () => {
          log.info('in hook');
          return { kind: 'forward' };
        },
      },
    }),
  );
  after(() => proxy.stop());
  tele.clear();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < 2; i++) await proxyRequest(proxy.address(), `${upstream.origin}/a`, { agent });
  agent.destroy();
  // The connection span ends once the proxy has seen the client go.
  await waitUntil(() => tele.spans().some((s) => s.name === 'connection'), 'the connection span');
  const hookLogs = tele.logs.filter((l) => l.msg === 'in hook');
  assert.equal(hookLogs.length, 2);
  assert.equal(hookLogs[0]!.fields.conn_id, hookLogs[1]!.fields.conn_id, 'same connection');
  assert.notEqual(hookLogs[0]!.fields.request_id, hookLogs[1]!.fields.request_id);
  const spans = tele.spans();
  const conn = spans.find((s) => s.name === 'connection');
  const requests = spans.filter((s) => s.name === 'request');
  assert.ok(conn, 'a connection span');
  assert.equal(requests.length, 2);
  for (const r of requests) {
    assert.notEqual(r.traceId, conn.traceId, 'a request has its own trace');
    assert.deepEqual(
      r.links.map((l) => l.traceId),
      [conn.traceId],
    );
  }
  assert.equal(await tele.metricValue('http_requests_total', { kind: 'forward' }), 2);
});

test('drain: no new connections, a running tunnel goes on until the deadline, then is closed', async () => {
  const app = await startApp(hooksApp());
  after(() => app.stop());
  const { port } = app.proxy.address();
  const t = await connectTunnel(app.address(), echo.authority);
  const draining = app.proxy.drain(600);
  await new Promise((r) => setTimeout(r, 100));
  const refused = await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
  assert.ok(refused, 'no longer accepting');
  t.socket.write('still');
  assert.equal((await readBytes(t.socket, 5)).toString(), 'still');
  const t0 = performance.now();
  await draining;
  assert.ok(performance.now() - t0 > 300);
  assert.ok(
    t.socket.destroyed || t.socket.readableEnded || (await readBytes(t.socket, 1, 1000)).length === 0,
  );
});
