/**
 * Which inherited stream socket each endpoint takes through `Listeners`, and what
 * `closeUnclaimed` does with the rest: a socket whose endpoint moved is not taken (and is
 * closed), one at exactly the address asked is taken whatever its name, a SEQPACKET socket
 * never serves a stream endpoint nor the reverse, systemd's are taken by name and never closed,
 * and a systemd socket taken by address is still matched by its unit's name after a handover.
 * The descriptors are real (socketpairs) where closing them is what is tested.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { after, test } from 'node:test';
import { passFd } from 'native';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { HANDOVER_ENV, type InheritedSocket, parseHandoverEnv } from './inherited.ts';
import { Listeners, serverFd } from './listeners.ts';
import { handoverOf } from './spawn-next.ts';

const open: number[] = [];
after(() => {
  for (const fd of open) {
    try {
      fs.closeSync(fd);
    } catch {
      // boundary: the test closed it on purpose
    }
  }
});

function realFd(): number {
  const [a, b] = passFd.socketPair('stream');
  open.push(a, b);
  return a;
}

function isOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false; // boundary: EBADF is the answer asked for
  }
}

const handed = (name: string, addr: InheritedSocket['addr'], more: Partial<InheritedSocket> = {}) =>
  ({ fd: realFd(), name, addr, source: 'handover', transport: 'stream', ...more }) as InheritedSocket;

test("endpoints take what fits; closeUnclaimed closes the rest of the handover, keeps systemd's", async () => {
  const moved = handed('moved', { kind: 'tcp', host: '127.0.0.1', port: 21055 });
  const renamed = handed('old-name', { kind: 'tcp', host: '127.0.0.1', port: 21056 });
  const seqpacket = handed(
    'tun',
    { kind: 'unix', path: '/nonexistent/tun.sock' },
    { transport: 'seqpacket' },
  );
  const stream = handed('ctl', { kind: 'unix', path: '/nonexistent/ctl.sock' });
  const named: InheritedSocket = { fd: realFd(), name: 'sd', addr: null, source: 'systemd' };
  const gone = handed('gone', { kind: 'tcp', host: '127.0.0.1', port: 21057 });
  const spare: InheritedSocket = { fd: realFd(), name: 'spare', addr: null, source: 'systemd' };
  const l = new Listeners([moved, renamed, seqpacket, stream, named, gone, spare]);

  const fresh = await l.hold('moved', { kind: 'tcp', host: '127.0.0.2', port: 0 });
  assert.notEqual(fresh.fd, moved.fd, 'moved to another host: bound afresh');
  assert.equal(fresh.origin, 'bound');
  const byAddr = await l.hold('new-name', { kind: 'tcp', host: '127.0.0.1', port: 21056 });
  assert.equal(byAddr.fd, renamed.fd, 'at exactly the address asked, whatever its name');
  assert.equal(byAddr.origin, 'handover');
  const offered: (number | null)[] = [];
  const foreign = (fd: number | null) => {
    offered.push(fd);
    return { fd: fd ?? 2000, stopAccepting: () => {} };
  };
  l.listenWith('tun', { kind: 'unix', path: '/nonexistent/tun.sock' }, foreign);
  l.listenWith('ctl', { kind: 'unix', path: '/nonexistent/ctl.sock' }, foreign);
  assert.deepEqual(offered, [seqpacket.fd, null], 'a stream socket is no SEQPACKET listener');
  const sd = await l.hold('sd', { kind: 'tcp', host: '127.0.0.3', port: 1 });
  assert.equal(sd.fd, named.fd, "systemd's by name: the socket unit says where it listens");
  assert.equal(sd.origin, 'systemd');

  const { closed, kept } = l.closeUnclaimed();
  assert.deepEqual(
    closed.map((s) => s.name),
    ['moved', 'ctl', 'gone'],
  );
  assert.deepEqual(
    kept.map((s) => s.name),
    ['spare'],
  );
  assert.ok(!isOpen(moved.fd) && !isOpen(stream.fd) && !isOpen(gone.fd), 'closed');
  assert.ok(isOpen(spare.fd) && isOpen(renamed.fd), "systemd's and the claimed stay open");
  assert.deepEqual(l.unused, [spare]);
  assert.deepEqual(l.closeUnclaimed().closed, [], 'once');
});

test('a fresh bind refused because an unclaimed inherited socket holds the port says so', async () => {
  const holder = net.createServer();
  after(() => holder.close());
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const { port } = holder.address() as net.AddressInfo;
  const l = new Listeners([handed('main', { kind: 'tcp', host: '127.0.0.1', port })]);
  await assert.rejects(
    l.listen('main', { kind: 'tcp', host: '0.0.0.0', port }, net.createServer()),
    (e) =>
      e instanceof FoundationsError &&
      e.code === FND_ERR.LISTEN &&
      e.message.includes(
        `EADDRINUSE (the old process listens on 127.0.0.1:${port} ("main") until this one`,
      ) &&
      /stop and start the service/.test(e.message),
  );
  assert.equal(l.unused.length, 1, 'not taken: 0.0.0.0 is not the address it had');
});

test('a systemd socket taken by address is handed on under its own name, not the endpoint’s', async () => {
  // As `systemd-socket-activate -l A -l B --fdname=main:other`, with endpoint "echo" at B.
  const unit = net.createServer();
  after(() => unit.close());
  await new Promise<void>((r) => unit.listen(0, '127.0.0.1', r));
  const { port } = unit.address() as net.AddressInfo;
  const sd: InheritedSocket = { fd: serverFd(unit), name: 'other', addr: null, source: 'systemd' };
  const first = await new Listeners([sd]).hold('echo', { kind: 'tcp', host: '127.0.0.1', port });
  assert.equal(first.fd, sd.fd, 'taken by address');

  const env = { [HANDOVER_ENV]: JSON.stringify(handoverOf([first], [])) };
  const [passed] = parseHandoverEnv(env)?.listeners ?? [];
  assert.equal(passed?.name, 'other');
  assert.equal(passed?.source, 'systemd');
  // The child would find it at slot 3; here it is the same descriptor.
  const inChild: InheritedSocket = { ...(passed as InheritedSocket), fd: sd.fd };
  const next = new Listeners([inChild]);
  const moved = await next.hold('echo', { kind: 'tcp', host: '127.0.0.1', port: 0 });
  assert.equal(moved.origin, 'bound', 'echo moved: bound afresh, as a fresh start would');
  assert.deepEqual(
    next.unused.map((s) => s.name),
    ['other'],
    'left to the unit',
  );
  const again = new Listeners([inChild]);
  assert.equal(
    (await again.hold('other', { kind: 'tcp', host: '127.0.0.9', port: 1 })).fd,
    sd.fd,
    'by its name',
  );
});
