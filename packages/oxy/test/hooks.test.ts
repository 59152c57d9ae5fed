/**
 * One test per hook method, each on a real proxy with the hook installed, plus the order in
 * which hooks fire for a CONNECT (recorded) and the app's ext state carried between hooks.
 * Throwing hooks are in hook-failures.test.ts.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { defineApp } from '../src/app.ts';
import type { ConnectionStats } from '../src/context/contexts.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import {
  connectTunnel,
  curl,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
} from '../src/testing/index.ts';

const upstream = await startHttpUpstream({
  '/hello': { body: 'hello', headers: { 'x-upstream': 'yes' } },
  '/rewritten': { body: 'rewritten path' },
});
const echo = await startTcpEcho();
after(() => Promise.all([upstream.close(), echo.close()]));

test('IngressHook.handleConnection: block closes before reading, allow (async) serves', async () => {
  const proxy = await startApp(
    hooksApp({
      ingress: {
        handleConnection: async (ctx) =>
          ctx.client.port % 2 === 0 ? IngressDecision.allow() : IngressDecision.allow(),
      },
    }),
  );
  assert.equal((await curl(['-x', `http://${proxy.address()}`, `${upstream.origin}/hello`])).stdout, 'hello');
  const blocking = await startApp(
    hooksApp({ ingress: { handleConnection: () => IngressDecision.block('no') } }),
  );
  after(() => Promise.all([proxy.stop(), blocking.stop()]));
  const r = await curl(['-x', `http://${blocking.address()}`, `${upstream.origin}/hello`]);
  assert.notEqual(r.code, 0);
  assert.equal(upstream.requests.filter((q) => q.url === '/hello').length, 1);
});

test('IngressHook.handleConnectionClose: fires once per connection with statistics', async () => {
  const seen: ConnectionStats[] = [];
  const proxy = await startApp(
    hooksApp({
      ingress: { handleConnectionClose: (stats) => void seen.push(stats) },
    }),
  );
  after(() => proxy.stop());
  await curl(['-x', `http://${proxy.address()}`, `${upstream.origin}/hello`, `${upstream.origin}/hello`]);
  const [conn] = proxy.recorder.connections();
  await proxy.recorder.waitFor(conn!, 'ingress.handleConnectionClose');
  // A moment more, so a second call would be seen.
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.length, 1);
  const s = seen[0]!;
  assert.equal(s.requests, 2);
  assert.ok(s.bytesIn > 50 && s.bytesOut > 50, JSON.stringify(s));
  assert.equal(s.closeReason, 'client_closed');
});

test('HttpRequestHook.handleProxyConnectRequest: block answers its status, allow connects', async () => {
  const proxy = await startApp(
    hooksApp({
      httpRequest: {
        handleProxyConnectRequest: (head) =>
          head.headers['proxy-authorization'] === 'Bearer ok'
            ? ConnectDirective.allow()
            : ConnectDirective.block(407, 'auth'),
      },
    }),
  );
  after(() => proxy.stop());
  const refused = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(refused.status, 407);
  refused.socket.destroy();
  const ok = await connectTunnel(proxy.address(), echo.authority, {
    headers: { 'proxy-authorization': 'Bearer ok' },
  });
  assert.equal(ok.status, 200);
  ok.socket.destroy();
});

test('HttpRequestHook.handleProxyConnectResponse: may add headers to the 200', async () => {
  const proxy = await startApp(
    hooksApp({
      httpRequest: {
        handleProxyConnectResponse: (res) => {
          res.headers['x-tunnel'] = 'edited';
          return undefined;
        },
      },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(t.status, 200);
  assert.equal(t.headers['x-tunnel'], 'edited');
  t.socket.destroy();
});

test('HttpRequestHook.handleRequest: rewrites, answers directly, or blocks', async () => {
  const proxy = await startApp(
    hooksApp({
      httpRequest: {
        handleRequest: (head) => {
          if (head.path === '/direct') return RequestDecision.respond({ status: 299, body: 'from the app' });
          if (head.path === '/blocked') return RequestDecision.block(451, 'unavailable');
          head.path = '/rewritten';
          head.headers['x-added'] = 'by hook';
          return RequestDecision.forward();
        },
      },
    }),
  );
  after(() => proxy.stop());
  const rewritten = await proxyRequest(proxy.address(), `${upstream.origin}/anything`);
  assert.equal(rewritten.text, 'rewritten path');
  assert.equal(upstream.requests.at(-1)!.headers['x-added'], 'by hook');
  const direct = await proxyRequest(proxy.address(), `${upstream.origin}/direct`);
  assert.deepEqual([direct.status, direct.text], [299, 'from the app']);
  const blocked = await proxyRequest(proxy.address(), `${upstream.origin}/blocked`);
  assert.equal(blocked.status, 451);
  assert.match(blocked.text, /unavailable/);
});

test('HttpRequestHook.handleResponse: may rewrite the response head', async () => {
  const proxy = await startApp(
    hooksApp({
      httpRequest: {
        handleResponse: (res) => {
          delete res.headers['x-upstream'];
          res.headers['x-proxy'] = 'added';
          return undefined;
        },
      },
    }),
  );
  after(() => proxy.stop());
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/hello`);
  assert.equal(r.text, 'hello');
  assert.equal(r.headers['x-upstream'], undefined);
  assert.equal(r.headers['x-proxy'], 'added');
});

test('TunnelHook.getAppTunnelPipeline: the app gets both sides and pumps them itself', async () => {
  const proxy = await startApp(
    hooksApp({
      tunnel: {
        getAppTunnelPipeline: () => async (client, up) => {
          client.on('data', (d: Buffer) => up.write(d.toString().toUpperCase()));
          up.on('data', (d: Buffer) => client.write(d));
          await new Promise((resolve) => client.on('close', resolve));
        },
      },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), echo.authority);
  t.socket.write('shout');
  assert.equal((await readBytes(t.socket, 5)).toString(), 'SHOUT');
  t.socket.destroy();
});

test('EgressHook.handleConnection: direct elsewhere, block (403), or via an upstream proxy', async () => {
  let chainedConnections = 0;
  const chained = await startApp(
    hooksApp({
      ingress: {
        handleConnection: () => {
          chainedConnections++;
          return IngressDecision.allow();
        },
      },
    }),
  );
  const proxy = await startApp(
    hooksApp({
      egress: {
        handleConnection: (target) => {
          if (target.host === 'redirect.test')
            return EgressDecision.direct({ host: '127.0.0.1', port: echo.port });
          if (target.port === echo.port || target.port === upstream.port)
            return EgressDecision.viaProxy(chained.proxy.address());
          return EgressDecision.block('not today');
        },
      },
    }),
  );
  after(() => Promise.all([proxy.stop(), chained.stop()]));
  const redirected = await connectTunnel(proxy.address(), 'redirect.test:1');
  redirected.socket.write('hi');
  assert.equal((await readBytes(redirected.socket, 2)).toString(), 'hi');
  redirected.socket.destroy();
  const blocked = await connectTunnel(proxy.address(), '127.0.0.1:2');
  assert.equal(blocked.status, 403);
  blocked.socket.destroy();
  // Chained: a tunnel goes through the second proxy with CONNECT…
  const viaChain = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(viaChain.status, 200);
  viaChain.socket.write('chained');
  assert.equal((await readBytes(viaChain.socket, 7)).toString(), 'chained');
  viaChain.socket.destroy();
  assert.equal(chainedConnections, 1);
  // …and a plain request in absolute form.
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/hello`);
  assert.equal(r.text, 'hello');
  assert.equal(chainedConnections, 2);
});

test('EgressHook.handleConnectionEstablished: gets the address connected to', async () => {
  const seen: string[] = [];
  const proxy = await startApp(
    hooksApp({
      egress: { handleConnectionEstablished: (addr) => void seen.push(`${addr.host}:${addr.port}`) },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), echo.authority);
  t.socket.destroy();
  assert.deepEqual(seen, [echo.authority]);
});

test('EgressHook.handleUpstreamIps and dnsResolveOverride: resolution under app control', async () => {
  const proxy = await startApp(
    hooksApp({
      egress: {
        dnsResolveOverride: (host) => (host === 'echo.test' ? ['127.0.0.1'] : undefined),
        handleUpstreamIps: (ips, ctx) => (ctx.target.port === 1 ? [] : ips),
      },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), `echo.test:${echo.port}`);
  assert.equal(t.status, 200);
  t.socket.write('dns');
  assert.equal((await readBytes(t.socket, 3)).toString(), 'dns');
  t.socket.destroy();
  const none = await connectTunnel(proxy.address(), 'echo.test:1');
  assert.equal(none.status, 403);
  none.socket.destroy();
});

test('a name with several addresses: resolution and handleUpstreamIps run once, then the race', async () => {
  // The addon's tunnel path takes one address only; with two it hands the ones it resolved to
  // the JS race instead of resolving again.
  let resolved = 0;
  let filtered = 0;
  const proxy = await startApp(
    hooksApp({
      egress: {
        dnsResolveOverride: () => {
          resolved++;
          return ['127.0.0.1', '127.0.0.1'];
        },
        handleUpstreamIps: (ips) => {
          filtered++;
          return ips;
        },
      },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), `twice.test:${echo.port}`);
  assert.equal(t.status, 200);
  t.socket.write('once');
  assert.equal((await readBytes(t.socket, 4)).toString(), 'once');
  t.socket.destroy();
  assert.deepEqual([resolved, filtered], [1, 1]);
});

test('EgressHook.tcpConnectOverride: the app connects', async () => {
  let called = 0;
  const proxy = await startApp(
    hooksApp({
      egress: {
        tcpConnectOverride: async () => {
          called++;
          const s = net.connect(echo.port, '127.0.0.1');
          await new Promise((resolve) => s.once('connect', resolve));
          return s;
        },
      },
    }),
  );
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), '192.0.2.1:9'); // never dialled: the app connects
  t.socket.write('own');
  assert.equal((await readBytes(t.socket, 3)).toString(), 'own');
  t.socket.destroy();
  assert.equal(called, 1);
});

test('hooks fire in order for a CONNECT, and ext state flows from the request hook to egress', async () => {
  const app = defineApp({
    name: 'order',
    version: '1',
    description: 'hook order',
    ext: { ingress: () => ({ tag: '' }) },
    start: () => ({
      ingress: { handleConnection: () => IngressDecision.allow(), handleConnectionClose: () => {} },
      httpRequest: {
        handleProxyConnectRequest: (_head, ctx) => {
          ctx.ingress.ext.tag = 'seen';
          return ConnectDirective.allow();
        },
        handleProxyConnectResponse: () => undefined,
      },
      egress: {
        handleConnection: (target, ctx) =>
          ctx.ingress.ext.tag === 'seen' ? EgressDecision.direct(target) : EgressDecision.block('no tag'),
        handleConnectionEstablished: () => {},
      },
      tunnel: { getAppTunnelPipeline: () => undefined },
    }),
  });
  const proxy = await startApp(app);
  after(() => proxy.stop());
  const t = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.destroy();
  const conns = proxy.recorder.connections();
  assert.equal(conns.length, 1);
  await proxy.recorder.waitFor(conns[0]!, 'ingress.handleConnectionClose');
  proxy.recorder.expectHooks(conns[0]!, [
    'ingress.handleConnection',
    'http.handleProxyConnectRequest',
    'egress.handleConnection',
    'egress.handleConnectionEstablished',
    'http.handleProxyConnectResponse',
    'tunnel.getAppTunnelPipeline',
    'ingress.handleConnectionClose',
  ]);
});

test('an unknown hook method is refused at start-up', async () => {
  await assert.rejects(
    startApp(hooksApp({ egress: { handleConection: () => EgressDecision.block('x') } as never })),
    /hooks\.egress\.handleConection is not a EgressHook method/,
  );
});
