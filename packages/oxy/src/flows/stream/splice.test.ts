/**
 * The kernel splice path on real loopback TCP, held to the pump's contract: bytes both ways with
 * exact counts, half-close carried across, a reset ending the other side, idle timeout, maximum
 * lifetime, a socket destroyed from outside, bytes Node had already read (the CONNECT head's
 * trailing bytes) delivered first, and a large transfer arriving intact.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { canSplice, spliceAvailable, spliceTunnel } from './splice.ts';

/** `outer` is our end; `inner` is the accepted end the splice works on. */
async function socketPair(): Promise<{ outer: net.Socket; inner: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const outer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const [inner] = (await once(server, 'connection')) as [net.Socket];
  server.close();
  await once(outer, 'connect');
  after(() => {
    outer.destroy();
    inner.destroy();
  });
  return { outer, inner };
}

/** client ⇄ [c.inner | splice | u.outer] ⇄ server */
async function tunnel(
  opts = { idleTimeoutMs: 0, maxLifetimeMs: 0 },
  before?: (c: net.Socket) => Promise<void>,
) {
  const c = await socketPair();
  const u = await socketPair();
  await before?.(c.outer);
  assert.ok(canSplice(c.inner, u.outer));
  const done = spliceTunnel(c.inner, u.outer, opts);
  return { client: c.outer, server: u.inner, done, clientSide: c.inner, upstreamSide: u.outer };
}

function readAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

test('the addon is built here', () => {
  assert.equal(spliceAvailable, true);
});

test('bytes flow both ways, FIN is carried across each way, and counts are exact', async () => {
  const { client, server, done } = await tunnel();
  const serverGot = readAll(server);
  const clientGot = readAll(client);
  client.end('hello upstream');
  assert.equal((await serverGot).toString(), 'hello upstream');
  server.end('hello client, after your FIN');
  assert.equal((await clientGot).toString(), 'hello client, after your FIN');
  const r = await done;
  assert.deepEqual([r.bytesUp, r.bytesDown, r.reason], [14, 28, 'done']);
});

test('bytes Node read before the splice (and a FIN) are delivered first and counted', async () => {
  const { server, done } = await tunnel(undefined, async (client) => {
    client.end('early bytes');
    await new Promise((r) => setTimeout(r, 50)); // Node's handle reads them (and the FIN)
  });
  const got = readAll(server);
  assert.equal((await got).toString(), 'early bytes');
  server.end();
  const r = await done;
  assert.deepEqual([r.bytesUp, r.bytesDown, r.reason], [11, 0, 'done']);
});

test('a reset upstream ends the client side', async () => {
  const { client, server, done } = await tunnel();
  client.on('error', () => {});
  client.resume();
  const ended = once(client, 'end');
  server.resetAndDestroy();
  const r = await done;
  await ended;
  assert.match(r.reason, /upstream_(reset|error)/);
});

test('a side destroyed from outside (e.g. a drain) ends the splice', async () => {
  const { client, clientSide, done } = await tunnel();
  client.on('error', () => {});
  client.resume();
  clientSide.destroy();
  const r = await done;
  assert.equal(r.reason, 'client_reset');
});

test('the idle timeout closes a silent tunnel, and activity keeps it open', async () => {
  const { client, server, done } = await tunnel({ idleTimeoutMs: 100, maxLifetimeMs: 0 });
  client.on('error', () => {});
  server.on('error', () => {});
  server.on('data', () => {});
  const start = performance.now();
  for (let i = 0; i < 5; i++) {
    client.write('tick');
    await new Promise((r) => setTimeout(r, 40));
  }
  assert.equal(client.destroyed, false);
  const r = await done;
  assert.equal(r.reason, 'idle_timeout');
  assert.equal(r.bytesUp, 20);
  assert.ok(performance.now() - start >= 200);
});

test('the maximum lifetime closes a busy tunnel', async () => {
  const { client, server, done } = await tunnel({ idleTimeoutMs: 0, maxLifetimeMs: 100 });
  client.on('error', () => {});
  server.on('error', () => {});
  server.on('data', () => {});
  const t = setInterval(() => client.write('x'), 10);
  const r = await done;
  clearInterval(t);
  assert.equal(r.reason, 'max_lifetime');
});

test('64 MiB up through a slow reader and 1 byte down arrive intact', async () => {
  const { client, server, done } = await tunnel();
  const data = randomBytes(64 << 20);
  const hash = createHash('sha256');
  let received = 0;
  server.on('data', (d: Buffer) => {
    hash.update(d);
    received += d.length;
    server.pause();
    setImmediate(() => server.resume());
  });
  server.on('end', () => server.end('!'));
  const back = readAll(client);
  client.end(data);
  assert.equal((await back).toString(), '!');
  const r = await done;
  assert.equal(received, 64 << 20);
  assert.equal(hash.digest('hex'), createHash('sha256').update(data).digest('hex'));
  assert.deepEqual([r.bytesUp, r.bytesDown, r.reason], [64 << 20, 1, 'done']);
});
