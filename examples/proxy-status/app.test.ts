/** The Proxy-Status example: curl sees the next hop on the CONNECT response, for an IP and for a name. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { startOxy } from 'oxy';
import { startHttpUpstream } from '../../packages/oxy/src/testing/peers.ts';
import { app } from './app.ts';

const upstream = await startHttpUpstream({ '/': { body: 'ok' } });
after(() => upstream.close());
const proxy = await startOxy(app, {
  telemetry: { server: { enabled: false }, logging: { verbosity: 'ERROR' } },
  endpoints: { main: { addr: '127.0.0.1:0' } },
  egress: { blocked_cidrs: [] },
  restart: { enabled: false },
});
after(() => proxy.close());
const { host, port } = proxy.address();

test('the CONNECT response names the address connected to', async () => {
  for (const origin of [upstream.origin, `http://localhost:${upstream.port}`]) {
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '-p',
      '-x',
      `http://${host}:${port}`,
      '-i',
      `${origin}/`,
    ]);
    const connectHead = stdout.split('\r\n\r\n')[0] ?? '';
    assert.match(connectHead, /^HTTP\/1\.1 200/);
    assert.match(connectHead, /proxy-status: oxy; next-hop="(127\.0\.0\.1|\[::1\]):\d+"/i);
    assert.match(stdout, /ok$/);
  }
});
