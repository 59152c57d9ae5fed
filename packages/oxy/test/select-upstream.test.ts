/**
 * `EgressHook.selectUpstream`: the candidates are tried in order (a refused one falls through
 * to the next), for tunnels and forwarded requests alike; an upstream that failed
 * `egress.upstream_health.failures` times in a row is skipped for the cooldown, unless every
 * candidate is ejected; an empty list blocks. Which addresses were tried is seen through
 * `handleUpstreamIps`, which fires for each candidate before its connect.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { defineApp, type RequestEndInfo } from '../src/index.ts';
import {
  type AppUnderTest,
  connectTunnel,
  type HttpUpstream,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  type TcpPeer,
  unusedPort,
} from '../src/testing/index.ts';

/** Loopback addresses where nothing listens on the chosen port: connects are refused. */
const DEAD = '127.0.0.3';
const DEAD_HTTP = '127.0.0.4';

let echo: TcpPeer;
let upstream: HttpUpstream;
let deadPort: number;
let oxy: AppUnderTest;
const tried: string[] = [];
const ends: RequestEndInfo[] = [];

before(async () => {
  echo = await startTcpEcho();
  upstream = await startHttpUpstream({ '/x': { body: 'pooled' } });
  deadPort = await unusedPort();
  const app = defineApp({
    name: 'select',
    version: '1.0.0',
    description: 'routes pool.test to a dead and a live upstream',
    start: () => ({
      egress: {
        selectUpstream: (target) => {
          if (target.host === 'tunnel.pool.test') return [`${DEAD}:${deadPort}`, echo.authority];
          if (target.host === 'http.pool.test')
            return [`${DEAD_HTTP}:${deadPort}`, `127.0.0.1:${upstream.port}`];
          if (target.host === 'dead.pool.test') return [`${DEAD}:${deadPort}`];
          if (target.host === 'none.pool.test') return [];
          if (target.host === 'lie.pool.test') return 'not a list' as never;
          if (target.host === 'typo.pool.test') return ['backend-without-port'];
          return undefined;
        },
        handleUpstreamIps: (ips) => {
          tried.push(...ips);
          return ips;
        },
      },
      httpRequest: { handleRequestEnd: (info) => void ends.push(info) },
    }),
  });
  oxy = await startApp(app, { settings: { egress: { upstream_health: { failures: 2, cooldown: '60s' } } } });
});

after(async () => {
  await oxy.stop();
  await echo.close();
  await upstream.close();
});

const count = (ip: string): number => tried.filter((x) => x === ip).length;

async function tunnelWorks(): Promise<void> {
  const t = await connectTunnel(oxy.address(), 'tunnel.pool.test:443');
  assert.equal(t.status, 200);
  t.socket.write('hi');
  assert.equal((await readBytes(t.socket, 2)).toString(), 'hi');
  t.socket.destroy();
}

test('a refused candidate falls through to the next; after `failures` in a row it is skipped', async () => {
  await tunnelWorks();
  assert.equal(count(DEAD), 1, 'the first candidate was tried');
  await tunnelWorks();
  assert.equal(count(DEAD), 2);
  // Two failures in a row: ejected for the cooldown, so only the live upstream is tried.
  await tunnelWorks();
  await tunnelWorks();
  assert.equal(count(DEAD), 2, 'the ejected upstream is skipped');
});

test('when every candidate is ejected they are tried anyway, and the client gets the failure', async () => {
  const before = count(DEAD);
  const t = await connectTunnel(oxy.address(), 'dead.pool.test:443');
  assert.equal(t.status, 502);
  t.socket.destroy();
  assert.equal(count(DEAD), before + 1);
});

test('forwarded requests go through the selection too, and name the upstream chosen', async () => {
  const from = ends.length;
  const res = await proxyRequest(oxy.address(), 'http://http.pool.test/x');
  assert.equal(res.status, 200);
  assert.equal(res.text, 'pooled');
  assert.equal(count(DEAD_HTTP), 1);
  const deadline = Date.now() + 5000;
  while (ends.length === from) {
    assert.ok(Date.now() < deadline);
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(ends.at(-1)?.upstream, `127.0.0.1:${upstream.port}`);
});

test('an empty list blocks with 403; undefined connects to the target itself', async () => {
  const t = await connectTunnel(oxy.address(), 'none.pool.test:443');
  assert.equal(t.status, 403);
  t.socket.destroy();
  const direct = await connectTunnel(oxy.address(), echo.authority);
  assert.equal(direct.status, 200);
  direct.socket.destroy();
});

test('an answer that is not a list of host:port fails closed (502), as a throw would', async () => {
  for (const target of ['lie.pool.test:443', 'typo.pool.test:443']) {
    const t = await connectTunnel(oxy.address(), target);
    assert.equal(t.status, 502, target);
    t.socket.destroy();
  }
});
