import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { defineApp, RequestDecision } from 'oxy';
import { proxyRequest, startApp, startHttpUpstream } from 'oxy/testing';

const app = defineApp({
  name: 'no-admin',
  version: '1.0.0',
  description: 'Forwards everything but /admin',
  start: () => ({
    httpRequest: {
      handleRequest: (head) =>
        head.path.startsWith('/admin')
          ? RequestDecision.block(403, 'no admin here')
          : RequestDecision.forward(),
    },
  }),
});

test('/admin is refused before it reaches the upstream; other paths go through', async () => {
  const upstream = await startHttpUpstream({ '/': { body: 'home' }, '/admin': { body: 'secrets' } });
  const oxy = await startApp(app);
  after(() => oxy.stop().then(() => upstream.close()));
  assert.equal((await proxyRequest(oxy.address(), `${upstream.origin}/`)).text, 'home');
  assert.equal((await proxyRequest(oxy.address(), `${upstream.origin}/admin`)).status, 403);
  assert.equal(upstream.requests.length, 1);

  const [first, second] = oxy.recorder.connections();
  oxy.recorder.expectHooks(first!, ['http.handleRequest']);
  assert.equal(oxy.recorder.callsOf(second!)[0]?.result, 'block 403 no admin here');
  const [ok, blocked] = await oxy.waitForAudit(2);
  assert.equal(ok?.status, 200);
  assert.equal(blocked?.status, 403);
});
