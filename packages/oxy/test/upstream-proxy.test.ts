/**
 * Chaining through an upstream proxy configured in `egress.upstream_proxy`: tunnels go through
 * it with CONNECT, plain requests in absolute form, both with the configured credentials in
 * `Proxy-Authorization`, and the client's own `Proxy-Authorization` never reaches it.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import {
  connectTunnel,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
} from '../src/testing/index.ts';

const upstream = await startHttpUpstream({ '/via': { body: 'via the chain' } });
const echo = await startTcpEcho();
const seen: string[] = [];
const chained = await startApp(
  hooksApp({
    httpRequest: {
      handleProxyConnectRequest: (head) => {
        seen.push(`CONNECT ${head.authority} ${head.headers['proxy-authorization']}`);
        return ConnectDirective.allow();
      },
      handleRequest: (head) => {
        seen.push(
          `${head.method} ${head.scheme}://${head.authority}${head.path} ${head.headers['proxy-authorization']}`,
        );
        return RequestDecision.forward();
      },
    },
  }),
);
const front = await startApp(hooksApp(), {
  settings: {
    egress: {
      upstream_proxy: { enabled: true, addr: chained.address(), username: 'oxy', password: 's3cret' },
    },
  },
});
// Stopped together: each one's leak check sees the other's connections (the chained proxy's
// pooled upstream connection opened while the front one ran) close too.
after(async () => {
  await Promise.all([upstream.close(), echo.close()]);
  await Promise.all([front.stop(), chained.stop()]);
});
const basic = `Basic ${Buffer.from('oxy:s3cret').toString('base64')}`;

test('a tunnel goes through the upstream proxy with CONNECT and its credentials', async () => {
  const t = await connectTunnel(front.address(), echo.authority, {
    headers: { 'proxy-authorization': 'Basic client' },
  });
  assert.equal(t.status, 200);
  t.socket.write('chain');
  assert.equal((await readBytes(t.socket, 5)).toString(), 'chain');
  t.socket.destroy();
  assert.deepEqual(seen.at(-1), `CONNECT ${echo.authority} ${basic}`);
});

test('a plain request goes to the upstream proxy in absolute form with its credentials', async () => {
  const r = await proxyRequest(front.address(), `${upstream.origin}/via`, {
    headers: { 'proxy-authorization': 'Basic client' },
  });
  assert.equal(r.text, 'via the chain');
  assert.deepEqual(seen.at(-1), `GET http://${upstream.authority}/via ${basic}`);
  assert.equal(upstream.requests.at(-1)!.headers['proxy-authorization'], undefined);
});
