/**
 * The pump on real loopback TCP: bytes both ways with counts, half-close carried across, a
 * reset on one side ending the other, idle timeout and maximum lifetime, and a large transfer
 * through a slow reader (backpressure) arriving intact.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type net from 'node:net';
import { after, test } from 'node:test';
import { socketPair } from '../../../test/fixtures/socket-pair.ts';
import { StreamPump } from './pump.ts';

/** client ⇄ [clientSide | pump | upstreamSide] ⇄ server */
async function tunnel(opts = { idleTimeoutMs: 0, maxLifetimeMs: 0 }) {
  const c = await socketPair();
  const u = await socketPair();
  const pump = new StreamPump(c.inner, u.outer, opts);
  after(() => {
    c.close();
    u.close();
  });
  return { client: c.outer, server: u.inner, pump };
}

function readAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

test('bytes flow both ways, FIN is carried across each way, and counts are exact', async () => {
  const { client, server, pump } = await tunnel();
  const serverGot = readAll(server);
  const clientGot = readAll(client);
  client.end('hello upstream');
  assert.equal((await serverGot).toString(), 'hello upstream');
  // The client half-closed; the other direction still works.
  server.end('hello client, after your FIN');
  assert.equal((await clientGot).toString(), 'hello client, after your FIN');
  const r = await pump.done;
  assert.deepEqual([r.bytesUp, r.bytesDown, r.reason], [14, 28, 'done']);
});

test('a reset upstream destroys the client side', async () => {
  const { client, server, pump } = await tunnel();
  client.on('error', () => {});
  client.resume();
  const ended = once(client, 'end');
  server.resetAndDestroy();
  const r = await pump.done;
  await ended;
  assert.match(r.reason, /upstream_(reset|error)/);
});

test('the idle timeout closes a silent tunnel, and activity keeps it open', async () => {
  const { client, server, pump } = await tunnel({ idleTimeoutMs: 100, maxLifetimeMs: 0 });
  client.on('error', () => {});
  server.on('error', () => {});
  server.on('data', () => {});
  const start = performance.now();
  for (let i = 0; i < 5; i++) {
    client.write('tick');
    await new Promise((r) => setTimeout(r, 40));
  }
  assert.equal(client.destroyed, false);
  const r = await pump.done;
  assert.equal(r.reason, 'idle_timeout');
  assert.ok(performance.now() - start >= 200);
});

test('the maximum lifetime closes a busy tunnel', async () => {
  const { client, server, pump } = await tunnel({ idleTimeoutMs: 0, maxLifetimeMs: 100 });
  client.on('error', () => {});
  server.on('error', () => {});
  server.on('data', () => {});
  const t = setInterval(() => client.write('x'), 10);
  const r = await pump.done;
  clearInterval(t);
  assert.equal(r.reason, 'max_lifetime');
});

test('32 MiB through a slow reader arrive intact (backpressure)', async () => {
  const { client, server, pump } = await tunnel();
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  let received = 0;
  let ok = true;
  server.on('data', (d: Buffer) => {
    for (let i = 0; i < d.length; i += 4099) if (d[i] !== ((received + i) % (1 << 20)) % 251) ok = false;
    received += d.length;
    server.pause();
    setImmediate(() => server.resume());
  });
  server.on('end', () => server.end());
  for (let i = 0; i < 32; i++) if (!client.write(block)) await once(client, 'drain');
  client.end();
  client.resume();
  const r = await pump.done;
  assert.equal(received, 32 << 20);
  assert.equal(r.bytesUp, 32 << 20);
  assert.ok(ok, 'content intact');
});
