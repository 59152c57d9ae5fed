/**
 * Spliced CONNECT tunnels through a running proxy: once the kernel splice runs, Node's socket
 * handles are closed (an idle tunnel keeps no libuv handle), yet the ingress connection is
 * accounted for when the tunnel really ends, a drain still ends spliced tunnels, the connection
 * statistics carry the tunnel's bytes, and the idle timeout and maximum lifetime still apply.
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import type { ConnectionStats } from '../src/context/contexts.ts';
import { spliceAvailable } from '../src/flows/stream/splice.ts';
import {
  type AppUnderTest,
  connectTunnel,
  hooksApp,
  readBytes,
  startApp,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';

// These follow Node's socket of a spliced tunnel: the path an `http` endpoint takes when the
// reactor thread does not accept for it (reactor-connect.test.ts covers that path's tunnels).
process.env.OXY_REACTOR_ACCEPT = '0';
const echo = await startTcpEcho();
after(() => echo.close());

/** The proxy's client-side sockets whose Node handle is closed (spliced tunnels). */
function splicedSockets(app: AppUnderTest): net.Socket[] {
  return [...app.proxy.runtime.connections]
    .flatMap((c) => (c.socket === null ? [] : [c.socket]))
    .filter((s) => (s as unknown as { _handle: unknown })._handle === null && !s.destroyed);
}

async function openTunnels(app: AppUnderTest, n: number): Promise<Duplex[]> {
  const out: Duplex[] = [];
  for (let i = 0; i < n; i++) {
    const t = await connectTunnel(app.address(), echo.authority);
    assert.equal(t.status, 200);
    t.socket.on('error', () => {});
    out.push(t.socket);
  }
  return out;
}

function closed(s: Duplex): Promise<void> {
  return new Promise((resolve) => s.once('close', () => resolve()));
}

test('the addon is available here', () => {
  assert.equal(spliceAvailable, true);
});

test('a spliced tunnel carries bytes with its handles closed, and the connection ends with it', async () => {
  const app = await startApp(hooksApp());
  after(() => app.stop());
  const [s] = (await openTunnels(app, 1)) as [Duplex];
  s.write('hello');
  assert.equal((await readBytes(s, 5)).toString(), 'hello');
  await waitUntil(() => splicedSockets(app).length === 1, 'the tunnel spliced');
  assert.equal(app.proxy.runtime.connections.size, 1);
  s.write('again');
  assert.equal((await readBytes(s, 5)).toString(), 'again');
  s.end();
  await waitUntil(() => app.proxy.runtime.connections.size === 0, 'the connection accounted as closed');
  const [rec] = await app.waitForAudit(1);
  assert.deepEqual([rec?.bytes_up, rec?.bytes_down, rec?.close_reason], [10, 10, 'done']);
});

test('a drain ends spliced tunnels: clients see the close, no connection is left', async () => {
  const app = await startApp(hooksApp());
  after(() => app.stop());
  const tunnels = await openTunnels(app, 3);
  for (const t of tunnels) {
    t.write('x');
    await readBytes(t, 1);
  }
  await waitUntil(() => splicedSockets(app).length === 3, 'all three spliced');
  const ended = tunnels.map((t) => {
    t.resume();
    return closed(t);
  });
  await app.proxy.drain(50);
  await Promise.all(ended);
  assert.equal(app.proxy.runtime.connections.size, 0);
  const records = await app.waitForAudit(3);
  for (const r of records) assert.equal(r.bytes_up, 1);
});

test('the idle timeout and the maximum lifetime end spliced tunnels', async () => {
  const app = await startApp(hooksApp(), {
    settings: { endpoints: { main: { tunnel_idle_timeout: '150ms' } } },
  });
  const capped = await startApp(hooksApp(), {
    settings: { endpoints: { main: { tunnel_max_lifetime: '200ms' } } },
  });
  after(() => Promise.all([app.stop(), capped.stop()]));
  const [idle] = (await openTunnels(app, 1)) as [Duplex];
  const [old] = (await openTunnels(capped, 1)) as [Duplex];
  const busy = setInterval(() => old.write('.'), 20);
  old.resume();
  idle.resume();
  // The capped tunnel may end with a reset (echoed bytes still unread): wait for 'close' only.
  await Promise.all([closed(idle), closed(old)]);
  clearInterval(busy);
  const [a] = await app.waitForAudit(1);
  const [b] = await capped.waitForAudit(1);
  assert.equal(a?.close_reason, 'idle_timeout');
  assert.equal(b?.close_reason, 'max_lifetime');
  await waitUntil(
    () => app.proxy.runtime.connections.size === 0 && capped.proxy.runtime.connections.size === 0,
    'connections accounted',
  );
});

test('IngressHook.handleConnectionClose: a tunnel connection reports its bytes once', async () => {
  // The tunnel is spliced with this hook installed too: the splice tops up the socket counters
  // the hook reads.
  const seen: ConnectionStats[] = [];
  const app = await startApp(
    hooksApp({ ingress: { handleConnectionClose: (stats) => void seen.push(stats) } }),
  );
  after(() => app.stop());
  const t = await connectTunnel(app.address(), echo.authority);
  const payload = Buffer.alloc(10000, 7);
  t.socket.write(payload);
  await readBytes(t.socket, payload.length);
  const [conn] = app.proxy.runtime.connections;
  assert.ok(conn !== undefined);
  // Closed once the addon announces the connect (at most 50 ms after it, for a tunnel still running).
  await waitUntil(
    () => (conn.socket as unknown as { _handle: unknown })._handle === null,
    'spliced: Node handle closed',
  );
  t.socket.end();
  await waitUntil(() => seen.length === 1, 'handleConnectionClose');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(seen.length, 1);
  const s = seen[0] as ConnectionStats;
  // In: the CONNECT head and the payload; out: the 200 head and the echo.
  assert.ok(s.bytesIn > payload.length && s.bytesIn < payload.length + 200, JSON.stringify(s));
  assert.ok(s.bytesOut > payload.length && s.bytesOut < payload.length + 100, JSON.stringify(s));
  assert.equal(s.requests, 1);
});
