/** The PSK example on a real proxy: private targets need the key, by IP and by name; public-looking ones do not. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { connectTunnel, readBytes, startApp, startTcpEcho } from 'oxy/testing';
import { app } from './app.ts';

const echo = await startTcpEcho();
const proxy = await startApp(app);
after(() => echo.close().then(() => proxy.stop()));

test('a private address is blocked without the pre-shared key', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(proxy.address(), target);
    assert.equal(t.status, 403, target);
    t.socket.destroy();
  }
  // The IP literal is refused before anything is resolved; the name by what it resolves to.
  const [byIp, byName] = proxy.recorder.connections();
  proxy.recorder.expectHooks(byIp!, ['http.handleProxyConnectRequest', 'egress.handleConnection']);
  proxy.recorder.expectHooks(byName!, [
    'http.handleProxyConnectRequest',
    'egress.handleConnection',
    'egress.handleUpstreamIps',
  ]);
});

test('the pre-shared key on the CONNECT opens private addresses', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(proxy.address(), target, {
      headers: { 'proxy-authorization': 'Preshared oxy-is-a-proxy' },
    });
    assert.equal(t.status, 200, target);
    t.socket.write('psk');
    assert.equal((await readBytes(t.socket, 3)).toString(), 'psk');
    t.socket.destroy();
  }
});

test('a wrong key is no key', async () => {
  const t = await connectTunnel(proxy.address(), echo.authority, {
    headers: { 'proxy-authorization': 'Preshared nope' },
  });
  assert.equal(t.status, 403);
  t.socket.destroy();
});
