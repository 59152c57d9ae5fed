/**
 * `Listeners.listenWith` and `track`, for sockets Node's `net` cannot listen on: the inherited
 * descriptor is offered by name (else none), a failure gives it back and names the endpoint,
 * `stopAccepting` reaches the foreign listener, and tracked connections hold a drain open until
 * they end or are destroyed at the deadline.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { Listeners } from './listeners.ts';

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
