/**
 * The testing framework's own tests: an app started in-process and as a child process, the
 * hook transcript of a real CONNECT, audit records, and the leak check failing when a test
 * leaves a connection open.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { defineApp, EgressDecision, IngressDecision } from '../src/index.ts';
import { startApp, startAppProcess } from '../src/testing/app.ts';
import { connectTunnel, proxyRequest, readBytes } from '../src/testing/clients.ts';
import { startHttpUpstream, startTcpEcho } from '../src/testing/peers.ts';

const app = defineApp({
  name: 'recorded',
  version: '1.0.0',
  description: 'implements a few hooks, answering the defaults',
  start: () => ({
    ingress: {
      handleConnection: () => IngressDecision.allow(),
      handleConnectionClose: () => {},
    },
    egress: {
      handleConnection: (target) => EgressDecision.direct(target),
    },
  }),
});

test('a CONNECT through an in-process app reads as a transcript, with an audit record', async () => {
  const echo = await startTcpEcho();
  after(() => echo.close());
  const oxy = await startApp(app);
  const tunnel = await connectTunnel(oxy.address(), echo.authority);
  assert.equal(tunnel.status, 200);
  tunnel.socket.write('ping');
  assert.equal((await readBytes(tunnel.socket, 4)).toString(), 'ping');
  tunnel.socket.end();
  const [conn] = oxy.recorder.connections();
  assert.ok(conn);
  await oxy.recorder.waitFor(conn, 'ingress.handleConnectionClose');
  oxy.recorder.expectHooks(conn, [
    'ingress.handleConnection',
    'egress.handleConnection',
    'ingress.handleConnectionClose',
  ]);
  const [record] = await oxy.waitForAudit(1);
  assert.equal(record?.kind, 'tunnel');
  assert.equal(record?.target, echo.authority);
  assert.equal(record?.bytes_up, 4);
  assert.equal(record?.bytes_down, 4);
  await oxy.stop();
});

test('stop() fails when something opened while the app ran is still open', async () => {
  const oxy = await startApp(app, { leakGraceMs: 500 });
  // A peer the test forgot to close: stop() must name it rather than let it outlive the test.
  const forgotten = await startTcpEcho();
  await assert.rejects(oxy.stop(), /the app leaked after stop\(\): 1 × TCP server/);
  await forgotten.close();
});

test('proxy-side connections are closed by stop(), so an open tunnel is not a leak', async () => {
  const echo = await startTcpEcho();
  after(() => echo.close());
  const oxy = await startApp(app);
  const tunnel = await connectTunnel(oxy.address(), echo.authority);
  assert.equal(tunnel.status, 200);
  await oxy.stop();
  assert.equal(oxy.proxy.runtime.connections.size, 0);
  tunnel.socket.destroy();
});

test('an app runs as a child process with settings, and stops cleanly on SIGTERM', async () => {
  const upstream = await startHttpUpstream({ '/hello': { body: 'world' } });
  after(() => upstream.close());
  const main = path.join(import.meta.dirname, '../src/main.ts');
  const proc = await startAppProcess(main);
  after(() => proc.stop());
  const res = await proxyRequest(proc.address(), `${upstream.origin}/hello`);
  assert.equal(res.status, 200);
  assert.equal(res.text, 'world');
  assert.equal(await proc.stop(), 0);
});
