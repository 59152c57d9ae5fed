/**
 * Whole tunnels run by the addon (`startTunnel`): the connect, the 2xx head, the early bytes
 * and the splice on the reactor thread, against real loopback listeners.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { errnoName, type SpliceEnd, spliceEnd, startTunnel, stopSplice } from 'native';
import { fdOf, loopbackPairs, type SocketPair } from './fixtures/socket-pairs.ts';

let pairs: Awaited<ReturnType<typeof loopbackPairs>>;
before(async () => {
  pairs = await loopbackPairs();
});
after(() => pairs.close());
const pair = (): Promise<SocketPair> => pairs.pair();

/** An owner that records what the addon tells it. */
class Owner {
  connected = false;
  readonly end: Promise<SpliceEnd & { kind: number; errno: number }>;
  #done!: (e: SpliceEnd & { kind: number; errno: number }) => void;
  constructor() {
    this.end = new Promise((r) => {
      this.#done = r;
    });
  }
  connectMs = -1;
  /** Whether the end had come when the connect was announced. */
  endedFirst = false;
  #ended = false;
  onSpliceConnected(connectMs: number): void {
    this.connected = true;
    this.connectMs = connectMs;
    this.endedFirst = this.#ended;
  }
  onSpliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): void {
    this.#ended = true;
    this.#done({ ...spliceEnd(kind === 2 ? 1 : kind, b01, b10, errno, side), kind, errno });
  }
}

function collect(s: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return once(s, 'end').then(() => Buffer.concat(parts));
}

test('connects, answers the client, sends the early bytes, then splices both ways', async () => {
  const upstream = net.createServer({ allowHalfOpen: true });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  after(() => upstream.close());
  const { outer, inner } = await pair();
  const owner = new Owner();
  const head = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n');
  startTunnel(owner, fdOf(inner), {
    ip: '127.0.0.1',
    port: (upstream.address() as net.AddressInfo).port,
    sourceIp: '127.0.0.1',
    head,
    early: Buffer.from('early;'),
    timeoutMs: 2000,
  });
  inner.destroy(); // the addon has its own duplicate
  const [up] = (await once(upstream, 'connection')) as [net.Socket];
  const atUpstream = collect(up);
  const atClient = collect(outer);
  const down = randomBytes(200_000);
  up.end(down);
  outer.end('then the client;');
  assert.equal((await atUpstream).toString(), 'early;then the client;');
  const got = await atClient;
  assert.deepEqual(got.subarray(0, head.length), head);
  assert.deepEqual(got.subarray(head.length), down);
  const end = await owner.end;
  assert.equal(owner.connected, true);
  assert.equal(end.kind, 0);
  assert.deepEqual([end.bytes0to1, end.bytes1to0], [16, down.length]);
  outer.destroy();
  up.destroy();
});

test('a tunnel that ends at once is announced with its end; a longer one while it runs', async () => {
  const upstream = net.createServer({ allowHalfOpen: true });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  after(() => upstream.close());
  const port = (upstream.address() as net.AddressInfo).port;
  const start = async (): Promise<{ owner: Owner; outer: net.Socket; up: net.Socket }> => {
    const { outer, inner } = await pair();
    const owner = new Owner();
    startTunnel(owner, fdOf(inner), {
      ip: '127.0.0.1',
      port,
      sourceIp: '',
      head: null,
      early: null,
      timeoutMs: 2000,
    });
    inner.destroy();
    const [up] = (await once(upstream, 'connection')) as [net.Socket];
    return { owner, outer, up };
  };
  // Short: both ends close within the announce delay; one callback turn carries both.
  const short = await start();
  const gotShort = collect(short.outer);
  short.up.end('bye');
  short.outer.end();
  short.up.resume();
  assert.equal((await gotShort).toString(), 'bye');
  assert.equal((await short.owner.end).kind, 0);
  assert.equal(short.owner.connected, true);
  assert.ok(short.owner.connectMs >= 0 && short.owner.connectMs < 2000, `${short.owner.connectMs} ms`);
  // Long: announced while it still runs.
  const long = await start();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(long.owner.connected, true, 'announced after the delay');
  const gotLong = collect(long.outer);
  long.up.end('later');
  long.outer.end();
  long.up.resume();
  assert.equal((await gotLong).toString(), 'later');
  assert.equal((await long.owner.end).kind, 0);
  assert.equal(long.owner.endedFirst, false);
  short.outer.destroy();
  long.outer.destroy();
});

test('a refused connect ends with kind 2 and ECONNREFUSED; nothing reached the client', async () => {
  const closed = net.createServer().listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const port = (closed.address() as net.AddressInfo).port;
  closed.close(); // nobody listens there now
  const { outer, inner } = await pair();
  const owner = new Owner();
  let got = 0;
  outer.on('data', (d: Buffer) => {
    got += d.length;
  });
  startTunnel(owner, fdOf(inner), {
    ip: '127.0.0.1',
    port,
    sourceIp: '',
    head: Buffer.from('HTTP/1.1 200 OK\r\n\r\n'),
    early: null,
    timeoutMs: 2000,
  });
  const end = await owner.end;
  assert.equal(end.kind, 2);
  assert.equal(errnoName(end.errno), 'ECONNREFUSED');
  assert.equal(owner.connected, false);
  // The client is the caller's again: it answers.
  inner.write('HTTP/1.1 502 Bad Gateway\r\n\r\n');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(got, 'HTTP/1.1 502 Bad Gateway\r\n\r\n'.length);
  outer.destroy();
  inner.destroy();
});

test('a stop before the connect completes says nothing was written', async () => {
  const { outer, inner } = await pair();
  const owner = new Owner();
  // Stopped on the JS thread before the reactor thread even ran the command.
  startTunnel(owner, fdOf(inner), {
    ip: '127.0.0.1',
    port: 9,
    sourceIp: '',
    head: Buffer.from('x'),
    early: null,
    timeoutMs: 0,
  });
  assert.equal(stopSplice(owner), true);
  outer.destroy();
  inner.destroy();
});

test('addresses must be literal IPs', async () => {
  const { outer, inner } = await pair();
  const base = { port: 80, sourceIp: '', head: null, early: null, timeoutMs: 100 };
  assert.throws(() => startTunnel(new Owner(), fdOf(inner), { ...base, ip: 'localhost' }), TypeError);
  assert.throws(
    () => startTunnel(new Owner(), fdOf(inner), { ...base, ip: '127.0.0.1', sourceIp: 'me' }),
    TypeError,
  );
  assert.throws(
    () => startTunnel(new Owner(), fdOf(inner), { ...base, ip: '127.0.0.1', port: 0 }),
    TypeError,
  );
  outer.destroy();
  inner.destroy();
});
