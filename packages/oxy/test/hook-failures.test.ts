/**
 * A hook that throws or rejects fails only its own connection or request: the client gets 500
 * (request-stage hooks) or 502 (egress and response hooks), the failure is logged once with
 * the connection's fields and counted, and the proxy keeps serving other clients, including
 * ones that were mid-tunnel when the failure happened.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EgressDecision } from '../src/hooks/egress.ts';
import {
  captureTelemetry,
  connectTunnel,
  curl,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'ERROR' });
after(() => tele.stop());
const upstream = await startHttpUpstream({
  '/ok': { body: 'fine' },
  '/boom': { body: 'unreached' },
  '/nine': { status: 209, body: 'ninebytes' },
});
const echo = await startTcpEcho();

const proxy = await startApp(
  hooksApp({
    httpRequest: {
      handleRequest: (head) => {
        if (head.path === '/boom') throw new Error('request hook exploded');
        if (head.path === '/reject') return Promise.reject('a string, not an Error');
        return { kind: 'forward' };
      },
      handleResponse: (res) => {
        if (res.status === 209) throw new Error('response hook exploded');
        return undefined;
      },
      handleProxyConnectRequest: (head) => {
        if (head.authority.startsWith('localhost')) throw new Error('connect hook exploded');
        return { kind: 'allow' };
      },
    },
    egress: {
      handleConnection: (target) => {
        if (target.port === 7) throw new Error('egress hook exploded');
        return EgressDecision.direct(target);
      },
    },
  }),
);
after(() => Promise.all([upstream.close(), echo.close()]).then(() => proxy.stop()));

test('a throwing request hook answers 500, is logged once with the connection fields, and counted', async () => {
  tele.clear();
  // A tunnel that is open while the failure happens must be unaffected.
  const open = await connectTunnel(proxy.address(), echo.authority);
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/boom`);
  assert.equal(r.status, 500);
  assert.doesNotMatch(r.text, /exploded/, 'no internals in the body');
  const errors = tele.logs.filter((l) => l.msg === 'app hook failed');
  assert.equal(errors.length, 1);
  const rec = errors[0]!.fields;
  assert.equal(rec.hook, 'HttpRequestHook.handleRequest');
  assert.match(String(rec.conn_id), /^c-/);
  assert.equal(rec.endpoint, 'main');
  assert.match(String(rec.request_id), /^r-/);
  assert.equal(await tele.metricValue('hooks_failures_total', { hook: 'HttpRequestHook.handleRequest' }), 1);
  open.socket.write('still');
  assert.equal((await readBytes(open.socket, 5)).toString(), 'still');
  open.socket.destroy();
  assert.equal((await curl(['-x', `http://${proxy.address()}`, `${upstream.origin}/ok`])).stdout, 'fine');
});

test('a non-Error rejection is wrapped and answered 500', async () => {
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/reject`);
  assert.equal(r.status, 500);
});

test('a throwing response hook answers 502', async () => {
  const r = await proxyRequest(proxy.address(), `${upstream.origin}/nine`);
  assert.equal(r.status, 502);
  assert.equal((await proxyRequest(proxy.address(), `${upstream.origin}/ok`)).text, 'fine');
});

test('a throwing CONNECT hook answers 500; a throwing egress hook answers 502', async () => {
  const t = await connectTunnel(proxy.address(), `localhost:${echo.port}`);
  assert.equal(t.status, 500);
  t.socket.destroy();
  const e = await connectTunnel(proxy.address(), '127.0.0.1:7');
  assert.equal(e.status, 502);
  e.socket.destroy();
  const ok = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(ok.status, 200);
  ok.socket.destroy();
});
