/** The firewall example with rules from its settings: blocked hosts and paths get 403, the rest passes. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { startOxy } from 'oxy';
import { startHttpUpstream } from '../../packages/oxy/src/testing/peers.ts';
import { app } from './app.ts';

const upstream = await startHttpUpstream({ '/public': { body: 'public' }, '/admin/x': { body: 'secret' } });
after(() => upstream.close());
const proxy = await startOxy(app, {
  telemetry: { server: { enabled: false }, logging: { verbosity: 'ERROR' } },
  endpoints: { main: { addr: '127.0.0.1:0' } },
  egress: { blocked_cidrs: [] },
  restart: { enabled: false },
  app: { blocked_hosts: ['localhost'], blocked_paths: ['/admin'] },
});
after(() => proxy.close());
const { host, port } = proxy.address();
const curl = (...args: string[]) =>
  promisify(execFile)('curl', ['-sS', '-x', `http://${host}:${port}`, '-w', ' %{http_code}', ...args]).then(
    (r) => r.stdout,
  );

test('allowed host and path pass', async () => {
  assert.equal(await curl(`${upstream.origin}/public`), 'public 200');
});

test('a blocked path prefix is 403', async () => {
  assert.match(await curl(`${upstream.origin}/admin/x`), /path blocked by firewall\n 403$/);
});

test('a blocked host is 403, for plain requests and for CONNECT', async () => {
  assert.match(await curl(`http://localhost:${upstream.port}/public`), / 403$/);
  const tunnel = await promisify(execFile)('curl', [
    '-sS',
    '-p',
    '-x',
    `http://${host}:${port}`,
    '-w',
    '%{http_connect}',
    `http://localhost:${upstream.port}/public`,
  ]).catch((e: { stdout: string }) => e);
  assert.equal(tunnel.stdout, '403');
});
