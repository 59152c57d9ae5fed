/**
 * The default restart socket: per user (XDG_RUNTIME_DIR, /run for root, a private tmpdir
 * directory otherwise), per instance (service name and -c files), and the start-up checks:
 * a foreign-owned file is refused, our own stale socket is replaced, a live one is named.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Lifecycle } from './lifecycle.ts';
import { Listeners } from './listeners.ts';
import {
  checkRestartSocketOwner,
  defaultRestartSockets,
  resolveRestartSocket,
  restartSocketDir,
  restartSocketName,
  withResolvedRestartSocket,
} from './socket-path.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socket-path-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const uid = process.getuid!();

test('the name is per service, and per set of config files (by real path, not contents)', () => {
  const a = path.join(dir, 'a.yaml');
  const b = path.join(dir, 'b.yaml');
  fs.writeFileSync(a, 'x: 1');
  fs.writeFileSync(b, 'x: 1');
  assert.equal(restartSocketName({ service: 'oxy' }), 'oxy-restart.sock');
  const na = restartSocketName({ service: 'oxy', configFiles: [a] });
  assert.match(na, /^oxy-restart-[0-9a-f]{8}\.sock$/);
  assert.notEqual(na, restartSocketName({ service: 'oxy', configFiles: [b] }));
  assert.notEqual(na, restartSocketName({ service: 'other', configFiles: [a] }));
  assert.notEqual(na, restartSocketName({ service: 'oxy', configFiles: [a, b] }));
  // The same file named another way, or edited, is the same instance.
  assert.equal(na, restartSocketName({ service: 'oxy', configFiles: [path.relative(process.cwd(), a)] }));
  fs.writeFileSync(a, 'x: 2');
  assert.equal(na, restartSocketName({ service: 'oxy', configFiles: [a] }));
  assert.equal(restartSocketName({ service: 'a/b c' }), 'a_b_c-restart.sock');
});

test("a restarter's candidates: the service's default sockets, with or without a hash, sockets only", async () => {
  const xdg = fs.mkdtempSync(path.join(dir, 'candidates-'));
  const servers: net.Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });
  for (const name of [
    'oxy-restart.sock',
    'oxy-restart-0123abcd.sock',
    'oxy2-restart.sock',
    'oxy-restart-x.sock',
  ]) {
    const server = net.createServer();
    servers.push(server);
    await new Promise<void>((r) => server.listen(path.join(xdg, name), r));
  }
  fs.writeFileSync(path.join(xdg, 'oxy-restart-11111111.sock'), 'not a socket');
  assert.deepEqual(defaultRestartSockets('oxy', { uid, xdgRuntimeDir: xdg, tmpdir: dir }), [
    path.join(xdg, 'oxy-restart-0123abcd.sock'),
    path.join(xdg, 'oxy-restart.sock'),
  ]);
});

// The private-directory branch is for non-root users: as root, act as uid 4242 (chown).
const me = uid === 0 ? 4242 : uid;
const own = (p: string): string => {
  if (uid === 0) fs.chownSync(p, me, me);
  return p;
};

test('the directory: XDG_RUNTIME_DIR when ours, /run for root, else a private tmpdir directory', () => {
  const xdg = path.join(dir, 'xdg');
  fs.mkdirSync(xdg, { mode: 0o700 });
  own(xdg);
  assert.equal(restartSocketDir({ uid: me, xdgRuntimeDir: xdg, tmpdir: dir }), xdg);
  assert.equal(restartSocketDir({ uid: 0, tmpdir: dir }), '/run');
  // Someone else's XDG_RUNTIME_DIR (here root's /) is not used; the private directory is made.
  const tmp = own(fs.mkdtempSync(path.join(dir, 'tmp-')));
  const priv = path.join(tmp, `foundations-${me}`);
  if (uid === 0) {
    fs.mkdirSync(priv, { mode: 0o700 });
    own(priv);
  }
  assert.equal(restartSocketDir({ uid: me, xdgRuntimeDir: '/', tmpdir: tmp }), priv);
  assert.equal(fs.statSync(priv).mode & 0o777, 0o700);
});

test('a private directory that is not ours or not closed is refused, naming restart.socket', () => {
  const tmp = fs.mkdtempSync(path.join(dir, 'hostile-'));
  const loose = path.join(tmp, `foundations-${me}`);
  fs.mkdirSync(loose);
  own(loose);
  fs.chmodSync(loose, 0o777);
  assert.throws(() => restartSocketDir({ uid: me, tmpdir: tmp }), {
    code: 'FND_ERR_RESTART',
    message: /restart\.socket: .* not a private directory .*mode 777/,
  });
  fs.chmodSync(loose, 0o700);
  if (uid === 0) {
    fs.chownSync(loose, 4244, 4244); // another user's, mode 0700
    assert.throws(() => restartSocketDir({ uid: me, tmpdir: tmp }), /owner uid 4244/);
  }
  fs.symlinkSync('/', path.join(tmp, 'foundations-4243'));
  assert.throws(() => restartSocketDir({ uid: 4243, tmpdir: tmp }), /not a directory/);
});

test('an explicit socket is kept (made absolute); an empty one resolves; settings without restart pass', () => {
  const env = { uid, xdgRuntimeDir: dir, tmpdir: dir };
  assert.equal(resolveRestartSocket('/x/r.sock', { service: 's' }, env), '/x/r.sock');
  assert.equal(resolveRestartSocket('r.sock', { service: 's' }, env), path.resolve('r.sock'));
  assert.equal(resolveRestartSocket('', { service: 's' }, env), path.join(dir, 's-restart.sock'));
  const plain = { other: 1 };
  assert.equal(withResolvedRestartSocket(plain, { service: 's' }), plain);
  const set = withResolvedRestartSocket({ restart: { enabled: true, socket: '/a.sock' } }, { service: 's' });
  assert.deepEqual(set, { restart: { enabled: true, socket: '/a.sock' } });
});

test('a file another user owns at the socket path is refused with a clear message', () => {
  const file = path.join(dir, 'foreign.sock');
  fs.writeFileSync(file, '');
  const owner = fs.statSync(file).uid;
  assert.doesNotThrow(() => checkRestartSocketOwner(file, owner));
  assert.doesNotThrow(() => checkRestartSocketOwner(path.join(dir, 'missing.sock'), owner + 1));
  assert.throws(() => checkRestartSocketOwner(file, owner + 1), {
    code: 'FND_ERR_RESTART',
    message: new RegExp(`restart\\.socket: ${file} exists and belongs to uid ${owner}.*set restart\\.socket`),
  });
});

function lifecycle(socket: string): Lifecycle {
  return new Lifecycle(
    {
      info: { name: 'socket-path-test', version: '0', description: 'test' },
      settings: { enabled: true, socket, drain_timeout: 1000, ready_timeout: 1000 },
      signals: false,
      log: () => {},
      exit: () => {},
    },
    new Listeners(),
    null,
  );
}

test('our own stale socket is replaced; a live one stops start-up with a message naming restart.socket', async () => {
  const socket = path.join(dir, 'stale.sock');
  // A socket file nobody listens on, as a killed process leaves it (Node unlinks on close,
  // so the file is moved away while the server closes).
  const leftover = net.createServer();
  await new Promise<void>((r) => leftover.listen(socket, r));
  fs.renameSync(socket, `${socket}.keep`);
  await new Promise<void>((r) => leftover.close(() => r()));
  fs.renameSync(`${socket}.keep`, socket);
  assert.ok(fs.lstatSync(socket).isSocket());
  const first = lifecycle(socket);
  await first.ready();
  assert.equal(first.phase, 'ready');
  const second = lifecycle(socket);
  await assert.rejects(second.ready(), {
    code: 'FND_ERR_RESTART',
    message: /restart\.socket: another running instance listens on .*stale\.sock; .*set restart\.socket/,
  });
  first.listeners.stopAccepting();
});
