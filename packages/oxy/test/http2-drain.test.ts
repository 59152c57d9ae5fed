/**
 * Draining an endpoint with HTTP/2 clients (restart or shutdown): each session gets GOAWAY at
 * once, so its client opens no new stream there, while the streams already open (a tunnel, a
 * forwarded request) run to their end; then the session closes and the drain resolves.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { after, test } from 'node:test';
import { connectTunnelH2, hooksApp, readBytes, startApp, startTcpEcho } from '../src/testing/index.ts';

const echo = await startTcpEcho();
const app = await startApp(hooksApp());
const proxy = app.proxy;
const idleProxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { http2: { idle_timeout: '300ms' } } } },
});
after(() => echo.close().then(() => Promise.all([app.stop(), idleProxy.stop()])));

test('drain: GOAWAY at once, the open tunnel finishes, then the session closes', async () => {
  const s = http2.connect(`http://${app.address()}`);
  s.on('error', () => {});
  after(() => s.destroy());
  const t = await connectTunnelH2(s, echo.authority);
  assert.equal(t.status, 200);
  const goaway = once(s, 'goaway');
  const drained = proxy.drain(5000);
  const [code] = (await goaway) as [number];
  assert.equal(code, http2.constants.NGHTTP2_NO_ERROR);
  // The tunnel opened before the GOAWAY still carries bytes both ways.
  t.stream.write('after goaway');
  assert.equal((await readBytes(t.stream, 12)).toString(), 'after goaway');
  let done = false;
  void drained.then(() => {
    done = true;
  });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(done, false, 'the drain waits for the open tunnel');
  const t0 = performance.now();
  t.stream.end();
  await drained;
  assert.ok(performance.now() - t0 < 2000, 'the drain ends soon after the last stream');
  assert.equal(proxy.runtime.connections.size, 0);
});

test('a session without open streams for idle_timeout is closed with GOAWAY; an open tunnel keeps it', async () => {
  const s = http2.connect(`http://${idleProxy.address()}`);
  s.on('error', () => {});
  after(() => s.destroy());
  const t = await connectTunnelH2(s, echo.authority);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(s.closed || s.destroyed, false, 'an open stream keeps the session');
  const goaway = once(s, 'goaway');
  const t0 = performance.now();
  t.stream.end();
  const [code] = (await goaway) as [number];
  assert.equal(code, http2.constants.NGHTTP2_NO_ERROR);
  const waited = performance.now() - t0;
  assert.ok(waited >= 250 && waited < 2000, `GOAWAY after ${waited} ms`);
});
