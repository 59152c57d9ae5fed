/** The firewall example with rules from its settings: blocked hosts and paths get 403, the rest passes. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { curl, startApp, startHttpUpstream } from 'oxy/testing';
import { app } from './app.ts';

const upstream = await startHttpUpstream({ '/public': { body: 'public' }, '/admin/x': { body: 'secret' } });
const proxy = await startApp(app, {
  settings: { app: { blocked_hosts: ['localhost'], blocked_paths: ['/admin'] } },
});
after(() => upstream.close().then(() => proxy.stop()));
/** curl through the proxy; stdout is the body and ` <status>`. A failing run fails the test. */
const get = async (url: string): Promise<string> => {
  const r = await curl(['-x', `http://${proxy.address()}`, '-w', ' %{http_code}', url]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
};

test('allowed host and path pass', async () => {
  assert.equal(await get(`${upstream.origin}/public`), 'public 200');
});

test('a blocked path prefix is 403', async () => {
  assert.match(await get(`${upstream.origin}/admin/x`), /path blocked by firewall\n 403$/);
});

test('a blocked host is 403, for plain requests and for CONNECT', async () => {
  assert.match(await get(`http://localhost:${upstream.port}/public`), / 403$/);
  const tunnel = await curl([
    '-p',
    '-x',
    `http://${proxy.address()}`,
    '-w',
    '%{http_connect}',
    `http://localhost:${upstream.port}/public`,
  ]);
  assert.equal(tunnel.stdout, '403');
});
