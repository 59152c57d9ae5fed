/**
 * A decision the framework does not know fails closed, for every hook that returns one: the
 * connection or request gets the hook's failure status (500 on the way in, 502 on the way out)
 * or is closed, the failure is logged once with the connection's fields and counted. Plain
 * JavaScript apps and casts are what this guards against, so the hooks below lie with `as never`.
 * Also here: `handleUpstreamIps` and `dnsResolveOverride` blocking with the app's own reason.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/hooks/egress.ts';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import {
  captureTelemetry,
  connectTunnel,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  type Tunnel,
  waitForClose,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'ERROR' });
after(() => tele.stop());
const upstream = await startHttpUpstream({
  '/ok': { body: 'fine' },
  '/bogus-response': { status: 299, body: 'x' },
});
const echo = await startTcpEcho();

/** Loopback addresses that make the egress hooks lie (all reach the echo peer's port). */
const LIE_IPS = '127.0.0.2';
const BLOCK_IPS = '127.0.0.3';
const LIE_TCP = '127.0.0.4';

const proxy = await startApp(
  hooksApp({
    ingress: {
      handleConnection: (ctx) =>
        ctx.endpoint.name === 'liar' ? ({ kind: 'maybe' } as never) : IngressDecision.allow(),
    },
    httpRequest: {
      handleProxyConnectRequest: (head) =>
        head.authority.startsWith('lie-connect.') ? ({ kind: 'yes' } as never) : ConnectDirective.allow(),
      handleProxyConnectResponse: (res, ctx) =>
        ctx.target.host === 'lie-connect-response.test' ? ('200 OK' as never) : res,
      handleRequest: (head) =>
        head.path === '/bogus-request' ? ({ kind: 'maybe' } as never) : RequestDecision.forward(),
      handleResponse: (res, ctx) =>
        ctx.target.port === upstream.port && res.status === 299 ? ({ status: 'fine' } as never) : undefined,
    },
    tunnel: {
      getAppTunnelPipeline: (ctx) => (ctx.target.host === 'lie-pipeline.test' ? (42 as never) : undefined),
    },
    egress: {
      handleConnection: (target) =>
        target.host === 'lie-egress.test'
          ? ({ kind: 'direct' } as never)
          : target.host.endsWith('.test') && !target.host.endsWith('-dns.test')
            ? EgressDecision.direct({ host: '127.0.0.1', port: target.port })
            : EgressDecision.direct(target),
      dnsResolveOverride: (host) =>
        host === 'lie-dns.test'
          ? (5 as never)
          : host === 'block-dns.test'
            ? EgressDecision.block('names under block-dns are not for you')
            : undefined,
      handleUpstreamIps: (ips) =>
        ips[0] === LIE_IPS
          ? (['not-an-ip'] as never)
          : ips[0] === BLOCK_IPS
            ? EgressDecision.block('the app says no to .3')
            : ips,
      tcpConnectOverride: (addrs) => (addrs[0]?.host === LIE_TCP ? ('a socket' as never) : undefined),
    },
  }),
  { settings: { endpoints: { liar: {} } } },
);
after(() => Promise.all([upstream.close(), echo.close()]).then(() => proxy.stop()));

/** The body of a refused CONNECT: what followed the head, until the proxy closed. */
async function bodyOf(t: Tunnel): Promise<string> {
  let text = t.head.toString();
  t.socket.on('data', (d: Buffer) => {
    text += d.toString();
  });
  await waitForClose(t.socket);
  return text;
}

/** Asserts one `app hook failed` record for `hook`, with the connection's fields, and its count. */
async function failedOnce(hook: string): Promise<void> {
  const errors = tele.logs.filter((l) => l.msg === 'app hook failed' && l.fields.hook === hook);
  assert.equal(errors.length, 1, `${hook}: ${JSON.stringify(tele.logs.map((l) => l.msg))}`);
  const rec = errors[0]!.fields;
  assert.match(String(rec.conn_id), /^c-/);
  assert.match(String((rec.err as { message?: string })?.message ?? rec.err), /not (a|an) /);
  assert.equal(await tele.metricValue('hooks_failures_total', { hook }), 1);
}

test('IngressHook.handleConnection: an unknown decision closes the connection unread', async () => {
  tele.clear();
  const [host, port] = proxy.address('liar').split(':');
  const socket = net.connect(Number(port), host);
  socket.write(`GET ${upstream.origin}/ok HTTP/1.1\r\nhost: x\r\n\r\n`);
  let got = '';
  socket.on('data', (d) => {
    got += d;
  });
  await waitForClose(socket);
  assert.equal(got, '', 'nothing is served');
  await failedOnce('IngressHook.handleConnection');
});

test('HttpRequestHook.handleProxyConnectRequest: an unknown directive answers 500, not a tunnel', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), `lie-connect.test:${echo.port}`);
  assert.equal(t.status, 500);
  t.socket.destroy();
  await failedOnce('HttpRequestHook.handleProxyConnectRequest');
});

test('HttpRequestHook.handleProxyConnectResponse: a non-head answers 500', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), `lie-connect-response.test:${echo.port}`);
  assert.equal(t.status, 500);
  t.socket.destroy();
  await failedOnce('HttpRequestHook.handleProxyConnectResponse');
});

test('HttpRequestHook.handleRequest: an unknown decision answers 500 instead of hanging', async () => {
  tele.clear();
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/bogus-request`);
  assert.equal(r.status, 500);
  await failedOnce('HttpRequestHook.handleRequest');
  assert.equal((await proxyRequest(proxy.address(), `${upstream.origin}/ok`)).text, 'fine');
});

test('HttpRequestHook.handleResponse: a head without a numeric status answers 502', async () => {
  tele.clear();
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/bogus-response`);
  assert.equal(r.status, 502);
  await failedOnce('HttpRequestHook.handleResponse');
});

test('TunnelHook.getAppTunnelPipeline: a non-function fails that tunnel only', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), `lie-pipeline.test:${echo.port}`);
  await waitForClose(t.socket);
  await failedOnce('TunnelHook.getAppTunnelPipeline');
});

test('EgressHook.handleConnection: a direct decision without an address answers 502', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), `lie-egress.test:${echo.port}`);
  assert.equal(t.status, 502);
  t.socket.destroy();
  await failedOnce('EgressHook.handleConnection');
});

test('EgressHook.dnsResolveOverride: a non-list answers 502; a block answers 403 with its reason', async () => {
  tele.clear();
  // The egress hook sends *.test to 127.0.0.1 except these two, which it leaves as names.
  const lie = await connectTunnel(proxy.address(), `lie-dns.test:${echo.port}`);
  assert.equal(lie.status, 502);
  lie.socket.destroy();
  await failedOnce('EgressHook.dnsResolveOverride');
  const blocked = await connectTunnel(proxy.address(), `block-dns.test:${echo.port}`);
  assert.equal(blocked.status, 403);
  assert.match(await bodyOf(blocked), /names under block-dns are not for you/);
  assert.equal(tele.logs.filter((l) => l.msg === 'app hook failed').length, 1, 'a block is no failure');
});

test('EgressHook.handleUpstreamIps: a non-address answers 502; a block answers 403 with the reason', async () => {
  tele.clear();
  const lie = await connectTunnel(proxy.address(), `${LIE_IPS}:${echo.port}`);
  assert.equal(lie.status, 502);
  lie.socket.destroy();
  await failedOnce('EgressHook.handleUpstreamIps');
  const blocked = await connectTunnel(proxy.address(), `${BLOCK_IPS}:${echo.port}`);
  assert.equal(blocked.status, 403);
  assert.match(await bodyOf(blocked), /the app says no to \.3/);
  blocked.socket.destroy();
  assert.equal(tele.logs.filter((l) => l.msg === 'app hook failed').length, 1, 'a block is no failure');
  const ok = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(ok.status, 200);
  ok.socket.write('hi');
  assert.equal((await readBytes(ok.socket, 2)).toString(), 'hi');
  ok.socket.destroy();
});

test('EgressHook.tcpConnectOverride: a non-stream answers 502', async () => {
  tele.clear();
  const t = await connectTunnel(proxy.address(), `${LIE_TCP}:${echo.port}`);
  assert.equal(t.status, 502);
  t.socket.destroy();
  await failedOnce('EgressHook.tcpConnectOverride');
});
