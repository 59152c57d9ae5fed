/**
 * SOCK_SEQPACKET on the real kernel: message boundaries are kept for every size from 1 B to
 * 64 KiB, in order, through a listener and through a pair, with batched sends that outrun the
 * socket buffer; refusals become named errors.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isNativeError, passFd, seqpacket } from 'native';

const dir = mkdtempSync(join(tmpdir(), 'seqpacket-'));
const closers: (() => void)[] = [];
after(() => {
  for (const c of closers) c();
  rmSync(dir, { recursive: true, force: true });
});

/** Sizes from 1 B to 64 KiB: every power of two, its neighbours, and random sizes. */
function sizes(): number[] {
  const out = [1, 2, 3];
  for (let p = 2; p <= 16; p++) out.push((1 << p) - 1, 1 << p, (1 << p) + 1);
  for (let i = 0; i < 200; i++) out.push(1 + Math.floor(Math.random() * 65536));
  return out.filter((n) => n <= 65536);
}

async function collect(sock: seqpacket.SeqpacketSocket, count: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  return await new Promise((resolve, reject) => {
    sock.on('error', reject);
    sock.on('messages', (ms) => {
      got.push(...ms);
      if (got.length >= count) resolve(got);
    });
  });
}

test('listen/accept/connect: 1 B to 64 KiB messages arrive whole and in order, both ways', async () => {
  const path = join(dir, 'echo.sock');
  const server = seqpacket.listen(path);
  closers.push(() => server.close());
  server.on('connection', (s) => {
    closers.push(() => s.close());
    s.on('messages', (ms) => s.send(ms)); // echo, batched
  });
  const client = await seqpacket.connect(path);
  closers.push(() => client.close());
  const msgs = sizes().map((n) => randomBytes(n));
  const echoed = collect(client, msgs.length);
  client.send(msgs); // several MiB in one call: most of it waits for 'drain'
  const got = await echoed;
  assert.equal(got.length, msgs.length);
  for (let i = 0; i < msgs.length; i++)
    assert.ok(got[i]!.equals(msgs[i]!), `message ${i} (${msgs[i]!.length} B)`);
});

test('a pair keeps boundaries for many small messages sent one by one', async () => {
  const [a, b] = seqpacket.pair();
  closers.push(
    () => a.close(),
    () => b.close(),
  );
  const n = 20000;
  const got = collect(b, n);
  for (let i = 0; i < n; i++) a.send(Buffer.from(String(i)));
  const ms = await got;
  assert.deepEqual(
    ms.map((m) => Number(m.toString())),
    Array.from({ length: n }, (_, i) => i),
  );
});

test('closing one end gives the other "end" then "close"', async () => {
  const [a, b] = seqpacket.pair();
  const ended = once(b, 'end');
  const closed = once(b, 'close');
  a.close();
  await ended;
  await closed;
});

test('a message larger than maxMessageSize is an EMSGSIZE error, never a cut message', async () => {
  const [a, b] = seqpacket.pair({ maxMessageSize: 1000 });
  closers.push(
    () => a.close(),
    () => b.close(),
  );
  const err = once(b, 'error');
  a.send(Buffer.alloc(1001));
  const [e] = (await err) as [Error & { code: string }];
  assert.ok(isNativeError(e));
  assert.equal(e.code, 'NATIVE_ERR_EMSGSIZE');
  assert.match(e.message, /send smaller messages or raise maxMessageSize/);
});

test('refusals are named errors that say what to do', async () => {
  await assert.rejects(seqpacket.connect(join(dir, 'nobody.sock')), (e: Error & { code: string }) => {
    assert.equal(e.code, 'NATIVE_ERR_ENOENT');
    assert.match(
      e.message,
      /connecting to SEQPACKET socket .*nobody\.sock was refused \(ENOENT\).*is the server running\?/,
    );
    return true;
  });
  const taken = join(dir, 'taken');
  writeFileSync(taken, '');
  assert.throws(() => seqpacket.listen(taken), {
    code: 'NATIVE_ERR_EADDRINUSE',
    message: /remove the stale file/,
  });
  assert.throws(() => seqpacket.listen(join(dir, 'x'.repeat(120))), { code: 'NATIVE_ERR_ENAMETOOLONG' });
  const [a, b] = seqpacket.pair();
  assert.throws(() => a.send(Buffer.alloc(0)), TypeError);
  a.close();
  b.close();
  assert.throws(() => a.send(Buffer.from('x')), { code: 'NATIVE_ERR_EBADF' });
});

test('an abstract socket name (@name) works and leaves no file', async () => {
  const name = `@oxy-test-${process.pid}-${Date.now()}`;
  const server = seqpacket.listen(name);
  closers.push(() => server.close());
  const accepted = once(server, 'connection');
  const client = await seqpacket.connect(name);
  const [conn] = (await accepted) as [seqpacket.SeqpacketSocket];
  closers.push(
    () => client.close(),
    () => conn.close(),
  );
  const got = collect(conn, 1);
  client.send(Buffer.from('hello'));
  assert.equal((await got)[0]!.toString(), 'hello');
});

test('opening and closing many sockets leaks no descriptor', async () => {
  const { readdirSync } = await import('node:fs');
  const count = () => readdirSync('/proc/self/fd').length;
  const before = count();
  for (let i = 0; i < 2000; i++) {
    const [a, b] = seqpacket.pair();
    a.close();
    b.close();
  }
  await new Promise((r) => setImmediate(r)); // uv_close callbacks run
  assert.equal(count(), before);
});

test('listen with replace: a stale file is replaced, a live listener refused, the file kept on close', async () => {
  const path = join(dir, 'replace.sock');
  const first = seqpacket.listen(path);
  first.close(); // unlinks: make a stale one by hand below
  const stale = seqpacket.listen(path, { unlinkOnClose: false });
  stale.close(); // the file stays, nobody accepts on it
  assert.ok(statSync(path).isSocket());
  const live = seqpacket.listen(path, { replace: true });
  closers.push(() => live.close());
  assert.throws(() => seqpacket.listen(path, { replace: true }), /another process listens/);
  const accepted = once(live, 'connection');
  const client = await seqpacket.connect(path);
  closers.push(() => client.close());
  const [server] = (await accepted) as [seqpacket.SeqpacketSocket];
  closers.push(() => server.close());
  live.close();
  assert.ok(statSync(path).isSocket(), 'replace mode leaves the file for the next process');
  writeFileSync(join(dir, 'plain'), 'x');
  assert.throws(() => seqpacket.listen(join(dir, 'plain'), { replace: true }), /not a socket/);
});

test('listenFd: the same listening socket accepts through a second descriptor; others are refused', async () => {
  const path = join(dir, 'adopt.sock');
  const original = seqpacket.listen(path, { replace: true });
  closers.push(() => original.close());
  const copy = seqpacket.listenFd(dupFd(original.fd), path);
  closers.push(() => copy.close());
  const inode = statSync(path).ino;
  original.close(); // the old owner goes: the socket lives on in the copy, its file untouched
  assert.equal(statSync(path).ino, inode);
  const accepted = once(copy, 'connection');
  const client = await seqpacket.connect(path);
  closers.push(() => client.close());
  const [server] = (await accepted) as [seqpacket.SeqpacketSocket];
  closers.push(() => server.close());
  const echoed = once(client, 'messages');
  server.on('messages', (ms) => server.send(ms));
  client.send(Buffer.from('hello'));
  assert.equal(((await echoed)[0] as Buffer[])[0]!.toString(), 'hello');
  const [a, b] = seqpacket.pair();
  closers.push(() => {
    a.close();
    b.close();
  });
  assert.throws(
    () => seqpacket.listenFd(dupFd(a.fd), 'pair'),
    (e) => isNativeError(e) && /not a listening Unix SEQPACKET socket/.test(e.message),
  );
});

/** A second descriptor for the same socket, passed with SCM_RIGHTS as a restart's child gets it. */
function dupFd(fd: number): number {
  const [a, b] = passFd.socketPair('stream');
  try {
    passFd.send(a, [fd]);
    const got = passFd.receive(b);
    assert.equal(got?.fds.length, 1);
    return got!.fds[0]!;
  } finally {
    closeSync(a);
    closeSync(b);
  }
}
