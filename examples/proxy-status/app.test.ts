/** The Proxy-Status example: curl sees the next hop on the CONNECT response, for an IP and for a name. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { curl, startApp, startHttpUpstream } from 'oxy/testing';
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
