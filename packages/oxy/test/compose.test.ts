/**
 * `composeApps`: separate namespaces (ext, settings, restart state) and the combination rule
 * (first non-allow decision wins and later apps are not asked; rewrites chain; overrides: the
 * first defined answer; events fire for every app), on a real proxy.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, test } from 'node:test';
import { s } from 'foundations/settings';
import { defineApp } from '../src/app.ts';
import { composeApps } from '../src/compose.ts';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import {
  captureTelemetry,
  connectTunnel,
  proxyRequest,
  startApp,
  startTcpEcho,
  waitForClose,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'ERROR' });
after(() => tele.stop());
const echo = await startTcpEcho();

/** What the second app saw, for the order assertions. */
const seenByB: string[] = [];
/** The client ports of the connections each app's close hook saw (one entry per call). */
const closedA: number[] = [];
const closedB: number[] = [];

const a = defineApp({
  name: 'a',
  version: '1',
  description: 'first app',
  settings: {
    app: s.object('A.', { word: s.str('A word.', 'alpha') }),
    endpoint: s.object('A per endpoint.', { tag: s.str('A tag.', 'a-default') }),
  },
  ext: { ingress: () => ({ n: 0 }) },
  start: (settings, restored) => ({
    lifecycle: { stateForRestart: () => ({ from: 'a', restored }) },
    ingress: {
      handleConnectionClose(_stats, ctx) {
        closedA.push(ctx.client.port);
        throw new Error('a close hook exploded');
      },
    },
    httpRequest: {
      handleProxyConnectRequest: (head) =>
        head.authority.startsWith('a-blocks.')
          ? ConnectDirective.block(451, 'a says no')
          : head.authority.startsWith('a-lies.')
            ? ({ kind: 'yes' } as never)
            : ConnectDirective.allow(),
      handleRequest(head, ctx) {
        ctx.ingress.ext.n += 1;
        if (head.path !== '/who') return RequestDecision.forward();
        return RequestDecision.respond({
          status: 200,
          body: `${settings.app.word} ${ctx.ingress.endpoint.appSettings.tag} ${ctx.ingress.ext.n}`,
        });
      },
    },
    egress: {
      dnsResolveOverride: (host) => (host === 'two.test' ? ['127.0.0.1', '127.0.0.2'] : undefined),
      handleUpstreamIps: (ips) => ips.filter((ip) => ip !== '127.0.0.2'),
    },
  }),
});

const b = defineApp({
  name: 'b',
  version: '2',
  description: 'second app',
  settings: {
    app: s.object('B.', { word: s.str('B word.', 'beta') }),
    endpoint: s.object('B per endpoint.', { tag: s.str('B tag.', 'b-default') }),
  },
  ext: { ingress: () => ({ n: 100 }) },
  start: (settings, restored) => ({
    lifecycle: { stateForRestart: () => ({ from: 'b', restored }) },
    ingress: {
      handleConnectionClose(_stats, ctx) {
        closedB.push(ctx.client.port);
      },
    },
    httpRequest: {
      handleProxyConnectRequest(head) {
        seenByB.push(`connect ${head.authority}`);
        return head.authority.startsWith('b-blocks.')
          ? ConnectDirective.block(403, 'b says no')
          : ConnectDirective.allow();
      },
      handleRequest(head, ctx) {
        ctx.ingress.ext.n += 10;
        return head.path === '/b'
          ? RequestDecision.respond({
              status: 200,
              body: `${settings.app.word} ${ctx.ingress.endpoint.appSettings.tag} ${ctx.ingress.ext.n}`,
            })
          : RequestDecision.forward();
      },
    },
    egress: {
      handleUpstreamIps(ips) {
        seenByB.push(`ips ${ips.join(',')}`);
        return ips;
      },
    },
  }),
});

const app = composeApps(a, b);
const proxy = await startApp(app, {
  settings: {
    app: { a: { word: 'hello' } },
    endpoints: { main: { app: { b: { tag: 'blue' } } } },
  },
  restoredState: { a: 'state of a', b: 'state of b' },
});
after(() => echo.close().then(() => proxy.stop()));

test('the composed app is named after its apps, and names must be distinct', () => {
  assert.equal(app.definition.name, 'a+b');
  assert.equal(app.definition.version, '1+2');
  assert.throws(() => composeApps(a, a), /distinct/);
});

test('each app sees its own ext, settings and per-endpoint settings', async () => {
  // The first app answers /who, after both counted nothing yet on this connection: n = 1.
  assert.equal((await proxyRequest(proxy.address(), 'http://x.test/who')).text, 'hello a-default 1');
  // The second app answers /b: its own counter, word and tag; the first app forwarded.
  assert.equal((await proxyRequest(proxy.address(), 'http://x.test/b')).text, 'beta blue 110');
});

test('restart state is kept per app, and each app got its own part back', async () => {
  const state = await proxy.proxy.runtime.hooks.stateForRestart?.();
  assert.deepEqual(state, {
    a: { from: 'a', restored: 'state of a' },
    b: { from: 'b', restored: 'state of b' },
  });
});

test('the first block wins and later apps are not asked; a later block still applies', async () => {
  seenByB.length = 0;
  const first = await connectTunnel(proxy.address(), `a-blocks.test:${echo.port}`);
  assert.equal(first.status, 451);
  first.socket.destroy();
  assert.deepEqual(seenByB, []);
  const second = await connectTunnel(proxy.address(), `b-blocks.test:${echo.port}`);
  assert.equal(second.status, 403);
  second.socket.destroy();
  assert.deepEqual(seenByB, [`connect b-blocks.test:${echo.port}`]);
});

test('an unknown decision from one app fails closed, whatever the next app says', async () => {
  seenByB.length = 0;
  const t = await connectTunnel(proxy.address(), `a-lies.test:${echo.port}`);
  assert.equal(t.status, 500);
  t.socket.destroy();
  assert.deepEqual(seenByB, []);
});

test('rewrites chain: the second app sees the addresses the first left', async () => {
  seenByB.length = 0;
  const t = await connectTunnel(proxy.address(), `two.test:${echo.port}`);
  assert.equal(t.status, 200);
  t.socket.destroy();
  assert.deepEqual(seenByB, [`connect two.test:${echo.port}`, 'ips 127.0.0.1']);
});

test('events fire for every app, even when an earlier one throws', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(t.status, 200);
  // Judged by this connection's own port: an earlier test's connection may close meanwhile.
  const port = (t.socket as net.Socket).localPort as number;
  t.socket.destroy();
  await waitForClose(t.socket);
  const deadline = Date.now() + 5000;
  while (!closedB.includes(port) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(closedA.filter((p) => p === port).length, 1);
  assert.equal(closedB.filter((p) => p === port).length, 1);
});
