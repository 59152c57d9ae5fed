/**
 * `Listeners.listenWith` and `track`, for sockets Node's `net` cannot listen on: the inherited
 * descriptor is offered by name (else none), a failure gives it back and names the endpoint,
 * `stopAccepting` reaches the foreign listener, and tracked connections hold a drain open until
 * they end or are destroyed at the deadline. An inherited TCP socket keeps the backlog asked
 * (Node listens on it again), and one from systemd is not lowered below the unit's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { after, test } from 'node:test';
import { passFd } from 'native';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { InheritedSocket } from './inherited.ts';
import { Listeners, serverFd } from './listeners.ts';

const ADDR = { kind: 'unix' as const, path: '/nonexistent/tun.sock' };

test('listenWith offers the inherited descriptor by name, else null; stopAccepting reaches it', () => {
  const inherited = [
    { fd: 1001, name: 'tun', addr: ADDR, source: 'handover' as const },
    { fd: 1002, name: 'other', addr: null, source: 'systemd' as const },
  ];
  const l = new Listeners(inherited);
  const offered: (number | null)[] = [];
  const stopped: number[] = [];
  const open = (fd: number | null) => {
    offered.push(fd);
    const own = fd ?? 2000;
    return { fd: own, stopAccepting: () => stopped.push(own) };
  };
  const a = l.listenWith('tun', ADDR, open);
  const b = l.listenWith('fresh', { kind: 'unix', path: '/nonexistent/fresh.sock' }, open);
  assert.deepEqual(offered, [1001, null]);
  assert.equal(a.origin, 'handover');
  assert.equal(a.fd, 1001);
  assert.equal(a.server, null);
  assert.equal(b.origin, 'bound');
  assert.deepEqual(
    l.active.map((x) => [x.name, x.fd]),
    [
      ['tun', 1001],
      ['fresh', 2000],
    ],
    'a restart hands both on',
  );
  assert.deepEqual(
    l.unused.map((s) => s.fd),
    [1002],
  );
  l.stopAccepting();
  assert.deepEqual(stopped, [1001, 2000]);
});

test('a failing open gives the inherited socket back and throws FND_ERR_LISTEN naming the endpoint', () => {
  const l = new Listeners([{ fd: 1001, name: 'tun', addr: ADDR, source: 'handover' }]);
  assert.throws(
    () =>
      l.listenWith('tun', ADDR, () => {
        throw Object.assign(new Error('wrong type'), { code: 'NATIVE_ERR_EPROTOTYPE' });
      }),
    (e) =>
      e instanceof FoundationsError &&
      e.code === FND_ERR.LISTEN &&
      e.userError &&
      /endpoint "tun" .*wrong type/.test(e.message),
  );
  assert.equal(l.unused.length, 1, 'the socket is free again');
  assert.equal(l.active.length, 0);
});

test('track: a drain waits for tracked connections; the deadline destroys them', async () => {
  const l = new Listeners();
  const destroyed: string[] = [];
  const endA = l.track({ destroy: () => destroyed.push('a') });
  l.track({ destroy: () => destroyed.push('b') });
  assert.equal(l.openConnections, 2);
  assert.equal(l.connections.size, 2);
  endA();
  endA(); // once only
  assert.equal(l.connections.size, 1);
  l.connections.close();
  assert.equal(await l.connections.wait(20), 'timeout', 'b holds the drain open');
  l.destroyConnections();
  assert.deepEqual(destroyed, ['b']);
});

/** A listener's backlog, as `ss` shows it (Send-Q); null without `ss`. */
function backlogOf(port: number): number | null {
  const ss = spawnSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' });
  if (ss.status !== 0) return null;
  return Number(ss.stdout.trim().split(/\s+/)[2]);
}

/** Another descriptor of the same socket, as a new process inherits it. */
function copyOf(fd: number): number {
  const [a, b] = passFd.socketPair('stream');
  passFd.send(a, [fd]);
  const [copy] = passFd.receive(b)?.fds ?? [];
  fs.closeSync(a);
  fs.closeSync(b);
  assert.ok(copy !== undefined);
  return copy;
}

const haveSs = spawnSync('ss', ['-V']).status === 0;

test('an inherited socket keeps the backlog asked; one from systemd is not lowered', {
  skip: !haveSs,
}, async () => {
  const servers: net.Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });
  const listen = async (l: Listeners, addr: InheritedSocket['addr'] & object): Promise<number> => {
    const server = await l.listen('main', addr, net.createServer(), { backlog: 1024 });
    servers.push(server);
    return serverFd(server);
  };
  const first = new Listeners();
  const fd = await listen(first, { kind: 'tcp', host: '127.0.0.1', port: 0 });
  const addr = first.active[0]?.addr as InheritedSocket['addr'] & object;
  const port = addr.kind === 'tcp' ? addr.port : 0;
  assert.equal(backlogOf(port), 1024);

  const handed: InheritedSocket = { fd: copyOf(fd), name: 'main', addr, source: 'handover' };
  await listen(new Listeners([handed]), addr);
  assert.equal(backlogOf(port), 1024, 'not Node’s default 511 after a restart');

  const fromUnit: InheritedSocket = { fd: copyOf(fd), name: 'main', addr: null, source: 'systemd' };
  await listen(new Listeners([fromUnit]), addr);
  const somaxconn = Number(fs.readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  assert.equal(backlogOf(port), somaxconn, 'as much as the kernel allows, as systemd asks by default');
});
