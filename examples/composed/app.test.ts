/**
 * The composed example on a real proxy: the PSK app's blocks still hold, and the Proxy-Status
 * app still names the next hop, on the same CONNECT, with each app's ext its own.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { connectTunnel, readBytes, startApp, startTcpEcho } from 'oxy/testing';
import { app } from './app.ts';

const echo = await startTcpEcho();
const proxy = await startApp(app);
after(() => echo.close().then(() => proxy.stop()));

test('without the key a private address is blocked, by IP and by name, and nothing is reported', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(proxy.address(), target);
    assert.equal(t.status, 403, target);
    assert.equal(t.headers['proxy-status'], undefined);
    t.socket.destroy();
  }
});

test('with the key the tunnel opens and its response names the next hop', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(proxy.address(), target, {
      headers: { 'proxy-authorization': 'Preshared oxy-is-a-proxy' },
    });
    assert.equal(t.status, 200, target);
    assert.match(String(t.headers['proxy-status']), /^oxy; next-hop="(127\.0\.0\.1|\[::1\]):\d+"$/);
    t.socket.write('both');
    assert.equal((await readBytes(t.socket, 4)).toString(), 'both');
    t.socket.destroy();
  }
  // One recorded call per composed hook, in the order the apps need them.
  const conn = proxy.recorder.connections().at(-1)!;
  proxy.recorder.expectHooks(conn, [
    'http.handleProxyConnectRequest',
    'egress.handleConnection',
    'egress.handleUpstreamIps',
    'egress.handleConnectionEstablished',
    'http.handleProxyConnectResponse',
  ]);
});
