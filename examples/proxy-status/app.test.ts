/**
 * The Proxy-Status example: curl sees the next hop on the CONNECT response, for an IP and for
 * a name; forwarded responses name it too, on a new and on a reused upstream connection.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, test } from 'node:test';
import { curl, proxyRequest, startApp, startHttpUpstream } from 'oxy/testing';
import { app } from './app.ts';

const upstream = await startHttpUpstream({ '/': { body: 'ok' } });
const proxy = await startApp(app);
after(() => upstream.close().then(() => proxy.stop()));

test('the CONNECT response names the address connected to', async () => {
  for (const origin of [upstream.origin, `http://localhost:${upstream.port}`]) {
    const { code, stdout, stderr } = await curl([
      '-p',
      '-x',
      `http://${proxy.address()}`,
      '-i',
      `${origin}/`,
    ]);
    assert.equal(code, 0, stderr);
    const connectHead = stdout.split('\r\n\r\n')[0] ?? '';
    assert.match(connectHead, /^HTTP\/1\.1 200/);
    assert.match(connectHead, /proxy-status: oxy; next-hop="(127\.0\.0\.1|\[::1\]):\d+"/i);
    assert.match(stdout, /ok$/);
  }
  // The response hook reads what the established hook recorded: that order is the app's premise.
  const conns = proxy.recorder.connections();
  assert.equal(conns.length, 2);
  for (const conn of conns) {
    proxy.recorder.expectHooks(conn, [
      'egress.handleConnectionEstablished',
      'http.handleProxyConnectResponse',
    ]);
  }
});

test('two forwarded requests on one keep-alive connection both name the next hop', async () => {
  const before = upstream.accepted();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await proxyRequest(proxy.address(), `${upstream.origin}/`, { agent });
      assert.equal(res.text, 'ok');
      assert.equal(res.headers['proxy-status'], `oxy; next-hop="127.0.0.1:${upstream.port}"`);
    }
  } finally {
    agent.destroy();
  }
  assert.equal(upstream.accepted() - before, 1, 'the second request reused the upstream connection');
});
