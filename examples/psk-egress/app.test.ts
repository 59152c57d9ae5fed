/** The PSK example on a real proxy: private targets need the key, by IP and by name; public-looking ones do not. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startOxy } from 'oxy';
import { connectTunnel, readBytes } from '../../packages/oxy/src/testing/clients.ts';
import { startTcpEcho } from '../../packages/oxy/src/testing/peers.ts';
import { app } from './app.ts';

const echo = await startTcpEcho();
after(() => echo.close());
const proxy = await startOxy(app, {
  telemetry: { server: { enabled: false }, logging: { verbosity: 'ERROR' } },
  endpoints: { main: { addr: '127.0.0.1:0' } },
  egress: { blocked_cidrs: [] },
  restart: { enabled: false },
});
after(() => proxy.close());

test('a private address is blocked without the pre-shared key', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(proxy.address(), target);
    assert.equal(t.status, 403, target);
    t.socket.destroy();
  }
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
