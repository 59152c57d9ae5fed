/**
 * UdpSocket on real loopback sockets, against node:dgram peers: IPv4, IPv6 and dual-stack,
 * batches both ways, 10,000 datagrams with none lost, truncation, ICMP errors on a connected
 * socket, a descriptor handed to another process or adopted again, close inside a callback,
 * and the errors malformed arguments give.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { formatIpv6, passFd, type UdpBatch, UdpSocket } from 'native';
import { countFds } from './fixtures/open-fds.ts';

const CHILD = fileURLToPath(new URL('./fixtures/udp-child.ts', import.meta.url));
const closers: (() => void)[] = [];
after(() => {
  for (const c of closers.reverse()) {
    try {
      c();
    } catch {
      // Named boundary: a peer the test closed itself throws on a second close.
    }
  }
});

function udp(opts: Parameters<typeof UdpSocket.bind>[0]): UdpSocket {
  const s = UdpSocket.bind(opts);
  closers.push(() => s.close());
  return s;
}

function peer(type: 'udp4' | 'udp6' = 'udp4'): Promise<dgram.Socket> {
  const p = dgram.createSocket(type);
  closers.push(() => p.close());
  return new Promise((resolve) => p.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', () => resolve(p)));
}

/** Resolves with the first `n` messages `p` receives (rejects after `ms`). */
function messages(p: dgram.Socket, n: number, ms = 5000): Promise<{ data: string; port: number }[]> {
  const got: { data: string; port: number }[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} datagrams arrived`)), ms);
    const on = (m: Buffer, r: dgram.RemoteInfo): void => {
      got.push({ data: m.toString(), port: r.port });
      if (got.length === n) {
        clearTimeout(timer);
        p.off('message', on);
        resolve(got);
      }
    };
    p.on('message', on);
  });
}

/** Copies what a batch holds (it is valid only during its callback). */
function take(b: UdpBatch): { data: string; address: string; port: number; family: number }[] {
  const out = [];
  for (let i = 0; i < b.count; i++)
    out.push({ data: b.payload(i).toString(), address: b.address(i), port: b.port(i), family: b.family(i) });
  return out;
}

test('IPv4: a burst arrives in batches with each sender address, and a batch echoes back untouched', async () => {
  const s = udp({ address: '127.0.0.1' });
  const p = await peer();
  const seen: ReturnType<typeof take> = [];
  const sizes: number[] = [];
  s.onBatch((b) => {
    seen.push(...take(b));
    sizes.push(b.count);
    assert.equal(s.sendBatch(b), b.count);
  });
  const echoes = messages(p, 50);
  for (let i = 0; i < 50; i++) p.send(`d${i}`, s.address().port, '127.0.0.1');
  const back = await echoes;
  assert.deepEqual(
    back.map((m) => m.data),
    Array.from({ length: 50 }, (_, i) => `d${i}`),
  );
  assert.ok(back.every((m) => m.port === s.address().port));
  assert.ok(seen.every((d) => d.address === '127.0.0.1' && d.port === p.address().port && d.family === 4));
  assert.ok(Math.max(...sizes) > 1, `batches of ${sizes.join(',')}`);
  const st = s.stats();
  assert.equal(st.received, 50);
  assert.equal(st.sent, 50);
  assert.equal(st.batches, sizes.length);
});

test('IPv6 and dual-stack: addresses formatted as Node formats them, replies reach v4-mapped senders', async () => {
  const s6 = udp({ address: '::1' });
  assert.deepEqual(s6.address().family, 6);
  const p6 = await peer('udp6');
  const got6 = new Promise<ReturnType<typeof take>>((resolve) => s6.onBatch((b) => resolve(take(b))));
  p6.send('six', s6.address().port, '::1');
  assert.deepEqual(await got6, [{ data: 'six', address: '::1', port: p6.address().port, family: 6 }]);

  const dual = udp({ address: '::', ipv6Only: false });
  const p4 = await peer('udp4');
  const got4 = new Promise<ReturnType<typeof take>>((resolve) =>
    dual.onBatch((b) => {
      resolve(take(b));
      dual.sendBatch(b);
    }),
  );
  const echo = messages(p4, 1);
  p4.send('four', dual.address().port, '127.0.0.1');
  assert.deepEqual(await got4, [
    { data: 'four', address: '::ffff:127.0.0.1', port: p4.address().port, family: 6 },
  ]);
  assert.equal((await echo)[0]?.data, 'four');
  // an IPv4 address given to a dual-stack socket is sent v4-mapped
  const again = messages(p4, 1);
  assert.equal(dual.send(Buffer.from('direct'), p4.address().port, '127.0.0.1'), 'sent');
  assert.equal((await again)[0]?.data, 'direct');

  assert.equal(formatIpv6(0x20010db8, 0, 0, 1), '2001:db8::1');
  assert.equal(formatIpv6(0x20010db8, 0x10000, 0x10001, 0x10001), '2001:db8:1:0:1:1:1:1');
  assert.equal(formatIpv6(0, 0, 0, 0), '::');
  assert.equal(formatIpv6(0x20010000, 0, 0x10000, 0), '2001::1:0:0:0');
});

test('10,000 datagrams through an echo, 200 in flight at a time: none lost, none twice', async () => {
  const s = udp({ address: '127.0.0.1' });
  s.onBatch((b) => s.sendBatch(b));
  const p = await peer();
  const total = 10_000;
  const seen = new Set<number>();
  let next = 0;
  const port = s.address().port;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${seen.size} of ${total} echoed`)), 20_000);
    p.on('message', (m) => {
      seen.add(m.readUInt32BE(0));
      if (next < total) send(1);
      if (seen.size === total) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const send = (n: number): void => {
    for (let k = 0; k < n && next < total; k++) {
      const b = Buffer.alloc(64);
      b.writeUInt32BE(next++, 0);
      p.send(b, port, '127.0.0.1');
    }
  };
  send(200);
  await done;
  assert.equal(seen.size, total);
  const st = s.stats();
  assert.equal(st.received, total);
  assert.equal(st.sent, total);
  assert.equal(st.truncated + st.dropped + st.sendErrors + st.receiveErrors, 0);
});

test('a datagram longer than maxDatagramSize is dropped, counted and reported, never delivered cut', async () => {
  const s = udp({ address: '127.0.0.1', maxDatagramSize: 100 });
  const got: number[] = [];
  let reported = 0;
  s.onTruncated((n) => {
    reported += n;
  });
  s.onBatch((b) => {
    for (let i = 0; i < b.count; i++) got.push(b.length(i));
  });
  const p = await peer();
  for (const n of [50, 200, 100, 101, 60]) p.send(Buffer.alloc(n, 1), s.address().port, '127.0.0.1');
  const until = Date.now() + 3000;
  while ((got.length < 3 || reported < 2) && Date.now() < until) await sleep(10);
  assert.deepEqual(got, [50, 100, 60]);
  assert.equal(s.stats().truncated, 2);
  assert.equal(reported, 2, 'onTruncated reports each one');
});

test('a connected socket: ICMP port unreachable is an ECONNREFUSED event, and the socket goes on working', async () => {
  const gone = await peer();
  const port = gone.address().port;
  await new Promise<void>((resolve) => gone.close(() => resolve()));
  const c = UdpSocket.connect({ address: '127.0.0.1', port });
  closers.push(() => c.close());
  assert.equal(c.connected, true);
  assert.deepEqual(c.remoteAddress(), { address: '127.0.0.1', port, family: 4 });
  const errors: string[] = [];
  const syscalls = new Set<string>();
  const replies: ReturnType<typeof take>[] = [];
  c.onError((e) => {
    errors.push(e.code);
    syscalls.add(e.syscall);
  });
  c.onBatch((b) => replies.push(take(b)));
  // one datagram, then no more sends (a later send could be the one to report the error)
  c.send(Buffer.from('into the void'));
  const until = Date.now() + 3000;
  while (errors.length === 0 && Date.now() < until) await sleep(10);
  assert.ok(errors.length > 0 && errors.every((e) => e === 'NATIVE_ERR_ECONNREFUSED'), errors.join());
  assert.equal(c.closed, false);
  // the error came as EPOLLERR, which libuv reports as EBADF and stops the poll handle on: the
  // addon read it with SO_ERROR and started the handle again (the replies below prove it)
  assert.ok(syscalls.has('getsockopt(SO_ERROR)'), [...syscalls].join());

  // someone listens there now: replies come back, without addresses (the socket is connected)
  const back = dgram.createSocket('udp4');
  closers.push(() => back.close());
  await new Promise<void>((resolve) => back.bind(port, '127.0.0.1', () => resolve()));
  back.on('message', (m, r) => back.send(Buffer.from(`re: ${m}`), r.port, r.address));
  while (replies.length === 0 && Date.now() < until + 3000) {
    c.send(Buffer.from('hello'));
    await sleep(20);
  }
  assert.deepEqual(replies[0]?.[0], { data: 're: hello', address: '', port: 0, family: 0 });
});

test('sendBatch: a list to several peers, and a batch to one target', async () => {
  const s = udp({ address: '127.0.0.1' });
  const [a, b] = [await peer(), await peer()];
  const toA = messages(a, 2);
  const toB = messages(b, 1);
  const n = s.sendBatch([
    { data: Buffer.from('a1'), address: '127.0.0.1', port: a.address().port },
    { data: Buffer.from('b1'), address: '127.0.0.1', port: b.address().port },
    { data: new Uint8Array([0x61, 0x32]), address: '127.0.0.1', port: a.address().port },
  ]);
  assert.equal(n, 3);
  assert.deepEqual(
    (await toA).map((m) => m.data),
    ['a1', 'a2'],
  );
  assert.deepEqual(
    (await toB).map((m) => m.data),
    ['b1'],
  );
  // relay: whatever a sends is forwarded to b, parsed once as a target
  const target = UdpSocket.target('127.0.0.1', b.address().port);
  s.onBatch((batch) => s.sendBatch(batch, target));
  const relayed = messages(b, 3);
  for (const d of ['x', 'y', 'z']) a.send(d, s.address().port, '127.0.0.1');
  assert.deepEqual(
    (await relayed).map((m) => m.data),
    ['x', 'y', 'z'],
  );
  // one datagram of a batch forwarded without a view: its first bytes left out, a header added
  const bTarget = UdpSocket.target('127.0.0.1', b.address().port);
  s.onBatch((batch) => {
    for (let i = batch.count - 1; i >= 0; i--)
      s.sendFrom(batch, i, bTarget, { skip: 4, header: Buffer.from('H:') });
    assert.throws(() => s.sendFrom(batch, batch.count), { name: 'TypeError', message: /no datagram/ });
    assert.throws(() => s.sendFrom(batch, 0, bTarget, { skip: 99 }), { name: 'TypeError', message: /skip/ });
  });
  const reversed = messages(b, 2);
  a.send('hdr:first', s.address().port, '127.0.0.1');
  a.send('hdr:second', s.address().port, '127.0.0.1');
  const r = (await reversed).map((m) => m.data);
  assert.ok(r.includes('H:first') && r.includes('H:second'), r.join());
  // a header before every payload of a batch
  s.onBatch((batch) => s.sendBatch(batch, bTarget, Buffer.from('SPP|')));
  const headed = messages(b, 2);
  a.send('one', s.address().port, '127.0.0.1');
  a.send('two', s.address().port, '127.0.0.1');
  assert.deepEqual((await headed).map((m) => m.data).sort(), ['SPP|one', 'SPP|two']);
  // a datagram without an address on an unconnected socket fails alone; the others go
  const errors: string[] = [];
  s.onError((e) => errors.push(e.code));
  const one = messages(a, 1);
  assert.equal(
    s.sendBatch([
      { data: Buffer.from('lost') },
      { data: Buffer.from('ok'), address: '127.0.0.1', port: a.address().port },
    ]),
    1,
  );
  assert.equal((await one)[0]?.data, 'ok');
  await sleep(0);
  assert.deepEqual(errors, ['NATIVE_ERR_EDESTADDRREQ']);
});

test('a bound socket handed to another process (SCM_RIGHTS) is read there; datagrams waiting are not lost', async () => {
  const s = UdpSocket.bind({ address: '127.0.0.1' });
  const port = s.address().port;
  const p = await peer();
  // these wait in the kernel's queue of the socket while it changes hands
  for (let i = 0; i < 5; i++) p.send(`early ${i}`, port, '127.0.0.1');
  await sleep(20);
  const [mine, theirs] = passFd.socketPair('stream');
  const child = spawn(process.execPath, [CHILD], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
  closers.push(() => child.kill('SIGKILL'));
  closeSync(theirs);
  const channel = new passFd.FdChannel(mine);
  closers.push(() => channel.close());
  channel.send([s.fd]);
  s.close(); // the child's copy keeps the socket open
  const [ready] = (await once(channel, 'message')) as [passFd.FdMessage];
  assert.equal(ready.data.toString(), 'ready');
  const got = messages(p, 6);
  p.send('late', port, '127.0.0.1');
  const replies = (await got).map((m) => m.data);
  assert.deepEqual(replies, [
    ...Array.from({ length: 5 }, (_, i) => `child ${child.pid}: early ${i}`),
    `child ${child.pid}: late`,
  ]);
  channel.close();
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
});

test('re-adopting a descriptor received over a socket pair continues where the first socket stopped', async () => {
  const first = UdpSocket.bind({ address: '127.0.0.1' });
  const port = first.address().port;
  const p = await peer();
  const [a, b] = passFd.socketPair('seqpacket');
  passFd.send(a, [first.fd]);
  const m = passFd.receive(b);
  closeSync(a);
  closeSync(b);
  first.close();
  p.send('while nobody reads', port, '127.0.0.1');
  await sleep(20);
  const second = UdpSocket.adopt(m!.fds[0]!);
  closers.push(() => second.close());
  assert.equal(second.address().port, port);
  const got = new Promise<string>((resolve) =>
    second.onBatch((batch) => resolve(batch.payload(0).toString())),
  );
  assert.equal(await got, 'while nobody reads');
});

test('close() inside a batch callback: no more callbacks, the descriptor is closed', async () => {
  const before = countFds('socket');
  const s = UdpSocket.bind({ address: '127.0.0.1', batch: 4 });
  const p = await peer();
  const peerSockets = countFds('socket') - before - 1;
  let calls = 0;
  s.onBatch(() => {
    calls++;
    s.close();
    assert.throws(() => s.send(Buffer.from('x'), 1, '127.0.0.1'), { code: 'NATIVE_ERR_EBADF' });
  });
  for (let i = 0; i < 40; i++) p.send(`n${i}`, s.address().port, '127.0.0.1');
  const until = Date.now() + 3000;
  while (calls === 0 && Date.now() < until) await sleep(10);
  await sleep(50);
  assert.equal(calls, 1);
  assert.equal(s.fd, -1);
  assert.equal(countFds('socket'), before + peerSockets);
  s.close(); // idempotent
});

test('malformed arguments and refused calls give clear, named errors', async () => {
  assert.throws(() => UdpSocket.bind({ address: 'not-an-ip' }), { name: 'TypeError', message: /IP address/ });
  assert.throws(() => UdpSocket.bind({ address: '127.0.0.1', port: 70000 }), {
    name: 'TypeError',
    message: /port/,
  });
  assert.throws(() => UdpSocket.bind({ address: '::1', batch: 65 }), { name: 'TypeError', message: /batch/ });
  assert.throws(() => UdpSocket.bind({ address: '::1', maxDatagramSize: 0 }), { name: 'TypeError' });
  assert.throws(() => UdpSocket.bind({ address: '192.0.2.1' }), {
    code: 'NATIVE_ERR_EADDRNOTAVAIL',
    message: /not one of this host/,
  });
  const s = udp({ address: '127.0.0.1' });
  assert.throws(() => UdpSocket.bind({ address: '127.0.0.1', port: s.address().port }), {
    code: 'NATIVE_ERR_EADDRINUSE',
    message: /reusePort/,
  });
  assert.throws(() => s.send('text' as unknown as Buffer, 1, '127.0.0.1'), {
    name: 'TypeError',
    message: /Buffer/,
  });
  assert.throws(() => s.send(Buffer.from('x')), { name: 'TypeError', message: /needs an address/ });
  assert.throws(() => s.send(Buffer.from('x'), 0, '127.0.0.1'), { name: 'TypeError', message: /port/ });
  assert.throws(() => s.send(Buffer.from('x'), 53, '::1'), { name: 'TypeError', message: /family/ });
  assert.throws(() => UdpSocket.target('nope', 1), { name: 'TypeError' });
  assert.throws(() => UdpSocket.adopt(-1), { name: 'TypeError' });
  const file = openSync(fileURLToPath(import.meta.url), 'r');
  assert.throws(() => UdpSocket.adopt(file), { code: 'NATIVE_ERR_ENOTSOCK' });
  closeSync(file);
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const tcp = (server as unknown as { _handle: { fd: number } })._handle.fd;
  assert.throws(() => UdpSocket.adopt(tcp), {
    code: 'NATIVE_ERR_EPROTOTYPE',
    message: /not an IPv4 or IPv6 UDP/,
  });
  server.close();
  const [u1, u2] = passFd.socketPair('dgram');
  assert.throws(() => UdpSocket.adopt(u1), { code: 'NATIVE_ERR_EPROTOTYPE' });
  closeSync(u1);
  closeSync(u2);
});
