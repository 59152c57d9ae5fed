/**
 * The kernel splice path on real loopback TCP, held to the pump's contract: bytes both ways with
 * exact counts, half-close carried across, a reset ending the other side, idle timeout, maximum
 * lifetime, a socket destroyed from outside, bytes Node had already read (the CONNECT head's
 * trailing bytes) delivered first, and a large transfer arriving intact.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import { test } from 'node:test';
import { socketPair } from '../../../test/fixtures/socket-pair.ts';
import { canSplice, spliceAvailable, spliceTunnel } from './splice.ts';

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

type Handled = net.Socket & { _handle: unknown };

test("once spliced, Node's handles are closed but the sockets stay (not destroyed) until the end", async () => {
  const { client, server, done, clientSide, upstreamSide } = await tunnel();
  await new Promise((r) => setImmediate(r));
  for (const s of [clientSide, upstreamSide] as Handled[]) {
    assert.equal(s._handle, null, 'handle released');
    assert.equal(s.destroyed, false);
  }
  const closed: boolean[] = [];
  clientSide.on('close', () => closed.push(true));
  const atServer = readAll(server);
  const atClient = readAll(client);
  client.write('ping');
  assert.equal((await readBytesOf(server, 4)).toString(), 'ping');
  assert.equal(closed.length, 0, 'no close while the tunnel runs');
  client.end();
  server.end('pong');
  assert.equal((await atClient).toString(), 'pong');
  await atServer;
  const r = await done;
  assert.deepEqual([r.bytesUp, r.bytesDown, r.reason], [4, 4, 'done']);
  await new Promise((r) => setImmediate(r));
  assert.equal(closed.length, 1);
  assert.equal(clientSide.destroyed, true);
  assert.equal(upstreamSide.destroyed, true);
});

/** Reads exactly `n` bytes from `s` (leaves it flowing). */
function readBytesOf(s: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    const on = (d: Buffer): void => {
      parts.push(d);
      got += d.length;
      if (got >= n) {
        s.off('data', on);
        resolve(Buffer.concat(parts));
      }
    };
    s.on('data', on);
  });
}

test("'close' listeners see the tunnel's bytes in bytesRead / bytesWritten (as without a splice)", async () => {
  const seen: number[][] = [];
  const { client, server, done, clientSide, upstreamSide } = await tunnel(undefined, async (c) => {
    c.write('early'); // read by Node before the splice: counted by the handle
    await new Promise((r) => setTimeout(r, 30));
  });
  clientSide.on('close', () => seen.push([clientSide.bytesRead, clientSide.bytesWritten]));
  upstreamSide.on('close', () => seen.push([upstreamSide.bytesRead, upstreamSide.bytesWritten]));
  const atServer = readAll(server);
  const atClient = readAll(client);
  client.end('-up-');
  server.end('down!!');
  assert.equal((await atServer).toString(), 'early-up-');
  assert.equal((await atClient).toString(), 'down!!');
  const r = await done;
  assert.deepEqual([r.bytesUp, r.bytesDown], [9, 6]);
  await new Promise((r) => setTimeout(r, 20));
  // client side: read 5 + 4, wrote 6; upstream side: read 6, wrote 5 + 4.
  assert.deepEqual(seen, [
    [9, 6],
    [6, 9],
  ]);
});

test('a destroy from outside stops the splice before any close listener runs', async () => {
  const { client, server, done, clientSide } = await tunnel();
  client.on('error', () => {});
  server.on('error', () => {});
  const serverEnded = once(server, 'end'); // FIN (half-open peers do not close by themselves)
  client.write('12345');
  await readBytesOf(server, 5);
  let atClose = -1;
  clientSide.on('close', () => {
    atClose = clientSide.bytesRead;
  });
  clientSide.destroy();
  const r = await done;
  assert.equal(r.reason, 'client_reset');
  assert.equal(r.bytesUp, 5);
  await new Promise((r) => setImmediate(r));
  assert.equal(atClose, 5);
  server.resume();
  await serverEnded; // the upstream peer is closed too
  assert.equal(clientSide.destroyed, true);
});

test('a client reset closes the upstream, and an upstream reset closes the client', async () => {
  for (const which of ['client', 'upstream'] as const) {
    const { client, server, done } = await tunnel();
    client.on('error', () => {});
    server.on('error', () => {});
    client.write('x');
    await readBytesOf(server, 1);
    const [resetter, other] = which === 'client' ? [client, server] : [server, client];
    other.resume();
    const otherEnded = once(other, 'end');
    resetter.resetAndDestroy();
    const r = await done;
    assert.match(r.reason, which === 'client' ? /^client_(reset|error)$/ : /^upstream_(reset|error)$/);
    await otherEnded;
  }
});

test('tunnels with the same idle timeout share one sweep: only the silent one closes', async () => {
  const opts = { idleTimeoutMs: 80, maxLifetimeMs: 0 };
  const busy = await tunnel(opts);
  const quiet = await tunnel(opts);
  for (const t of [busy, quiet]) {
    t.client.on('error', () => {});
    t.server.on('error', () => {});
    t.server.resume();
  }
  const tick = setInterval(() => busy.client.write('.'), 20);
  const r = await quiet.done;
  assert.equal(r.reason, 'idle_timeout');
  assert.equal(busy.client.destroyed, false, 'the busy tunnel is still open');
  clearInterval(tick);
  const b = await busy.done;
  assert.equal(b.reason, 'idle_timeout');
  assert.ok(b.bytesUp > 0);
});

test('tunnels with the same maximum lifetime close in start order, each after its own lifetime', async () => {
  const opts = { idleTimeoutMs: 0, maxLifetimeMs: 150 };
  const started: number[] = [];
  const ended: Promise<number>[] = [];
  for (let i = 0; i < 3; i++) {
    // The start is taken just before the splice starts (its lifetime with it), not after: a
    // loaded machine may run something else between the two for longer than the 10 ms margin.
    let startedAt = 0;
    const t = await tunnel(opts, async () => {
      startedAt = performance.now();
    });
    t.client.on('error', () => {});
    t.server.on('error', () => {});
    started.push(startedAt);
    ended.push(
      t.done.then((r) => {
        assert.equal(r.reason, 'max_lifetime');
        return performance.now();
      }),
    );
    await new Promise((r) => setTimeout(r, 40));
  }
  const ends = await Promise.all(ended);
  for (let i = 0; i < 3; i++) {
    const lived = (ends[i] as number) - (started[i] as number);
    assert.ok(lived >= 140 && lived < 400, `tunnel ${i} lived ${lived} ms`);
  }
  assert.ok((ends[0] as number) <= (ends[1] as number) && (ends[1] as number) <= (ends[2] as number));
});
