/**
 * The syscall sandbox on the real kernel: a sandboxed child serving HTTP and proxying keeps
 * working (fs, dns, zlib, fetch, child processes, a graceful restart handing its listener to a
 * new generation), and forbidden syscalls, from JS and from the libuv thread pool, get the
 * violation action.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('./fixtures/sandboxed-service.ts', import.meta.url));
const children: ChildProcess[] = [];
const otherPids: number[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of otherPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Named boundary: it has already exited, as it should.
    }
  }
});

interface Service {
  child: ChildProcess;
  port: number;
  report: { ioUring: string; allowed: number };
  get(path: string): Promise<{ status: number; body: string }>;
}

async function start(action: string, lists = 'default'): Promise<Service> {
  const child = spawn(process.execPath, [FIXTURE, action, lists], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8');
  while (!out.includes('\n')) {
    const [chunk] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit')])) as [string];
    if (typeof chunk !== 'string') throw new Error(`fixture exited before listening (${child.signalCode})`);
    out += chunk;
  }
  const { port, report } = JSON.parse(out.split('\n')[0]!);
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' } });
    return { status: res.status, body: await res.text() };
  };
  return { child, port, report, get };
}

async function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  return { code: child.exitCode, signal: child.signalCode };
}

describe('syscall sandbox (seccomp, real kernel)', () => {
  test('kill_process: a sandboxed service serves, proxies and spawns; every thread is filtered', async () => {
    const svc = await start('kill_process');
    assert.ok(svc.report.allowed > 100);
    assert.equal((await svc.get('/proxy')).body, 'proxied: upstream says hi');
    assert.equal((await svc.get('/fs')).body, 'read ok');
    // The machine's /etc/hosts decides which loopback address comes first (Debian's lists ::1 too).
    assert.match((await svc.get('/dns')).body, /^(127\.0\.0\.1|::1)$/);
    assert.equal((await svc.get('/zlib')).status, 200);
    assert.equal((await svc.get('/fetch')).body, 'upstream says hi');
    assert.equal((await svc.get('/spawn')).body, 'child 42 0 null');
    assert.equal((await svc.get('/worker')).body, 'worker 42', 'a Worker thread (its own event loop) starts');
    // Concurrent proxying wakes the lazily started parts (more libuv workers, sockets).
    const bodies = await Promise.all(Array.from({ length: 100 }, () => svc.get('/proxy')));
    assert.ok(bodies.every((b) => b.body === 'proxied: upstream says hi'));
    const threads = JSON.parse((await svc.get('/threads')).body) as { name: string; mode: number }[];
    assert.ok(threads.length >= 5);
    assert.deepEqual(
      threads.filter((t) => t.mode !== 2),
      [],
      'TSYNC: every thread is in filter mode',
    );
    svc.child.kill('SIGTERM');
    await exitOf(svc.child);
  });

  test('kill_process: a forbidden syscall from the main thread kills the process with SIGSYS', async () => {
    const svc = await start('kill_process');
    await svc.get('/forbid-main').catch(() => undefined);
    assert.deepEqual(await exitOf(svc.child), { code: null, signal: 'SIGSYS' });
  });

  test('kill_process: a forbidden syscall from the libuv thread pool kills the process', async () => {
    const svc = await start('kill_process', 'no_fs_write');
    await svc.get('/forbid-pool').catch(() => undefined);
    assert.deepEqual(await exitOf(svc.child), { code: null, signal: 'SIGSYS' });
  });

  test('return_error: forbidden syscalls fail with EPERM and the service keeps serving', async () => {
    const svc = await start('return_error', 'no_fs_write');
    assert.equal((await svc.get('/forbid-main')).body, 'EPERM');
    assert.equal((await svc.get('/forbid-pool')).body, 'EPERM');
    assert.equal((await svc.get('/proxy')).body, 'proxied: upstream says hi');
    svc.child.kill('SIGTERM');
    await exitOf(svc.child);
  });

  test('allow_and_log: forbidden syscalls run', async () => {
    const svc = await start('allow_and_log', 'no_fs_write');
    assert.equal((await svc.get('/forbid-main')).body, 'allowed');
    assert.equal((await svc.get('/forbid-pool')).body, 'allowed');
    svc.child.kill('SIGTERM');
    await exitOf(svc.child);
  });

  test('a graceful restart works under the sandbox: the next generation inherits it and the listener', async () => {
    const svc = await start('kill_process');
    const r = await svc.get('/restart');
    assert.match(r.body, /^READY \d+$/);
    const gen2 = Number(r.body.split(' ')[1]);
    otherPids.push(gen2);
    // The old generation stops accepting; the same socket is now served by the new one.
    let body = '';
    for (let i = 0; i < 50 && body !== 'gen2'; i++) body = (await svc.get('/who')).body;
    assert.equal(body, 'gen2');
    assert.equal((await svc.get('/proxy')).body, 'proxied: upstream says hi');
    const threads = JSON.parse((await svc.get('/threads')).body) as { mode: number }[];
    assert.ok(threads.every((t) => t.mode === 2));
    process.kill(gen2, 'SIGTERM');
    svc.child.kill('SIGTERM');
    await exitOf(svc.child);
  });
});

describe('restartWithoutIoUring', () => {
  const NO_IO_URING = fileURLToPath(new URL('./fixtures/no-io-uring.ts', import.meta.url));

  async function run(args: string[]): Promise<{ pid: number; out: Record<string, unknown> }> {
    const child = spawn(process.execPath, [NO_IO_URING, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
    });
    const [code, signal] = await once(child, 'exit');
    assert.deepEqual([code, signal], [0, null]);
    return { pid: child.pid!, out: JSON.parse(out) };
  }

  test('restarts the same process (same PID, arguments, stdio) with no io_uring ring', async () => {
    const { pid, out } = await run(['a', 'b c']);
    assert.equal(out.pid, pid);
    assert.equal(out.starts, 2);
    assert.deepEqual(out.argv, ['a', 'b c']);
    assert.equal(out.rings, 0);
    assert.equal(out.body, 'ok');
    assert.equal(out.read, true);
  });

  test('then the sandbox refuses io_uring entirely and libuv serves on epoll', async () => {
    const { out } = await run(['sandbox']);
    assert.equal((out.report as { ioUring: string }).ioUring, 'no_rings');
    assert.equal(out.rings, 0);
    assert.equal(out.body, 'ok');
    assert.equal(out.read, true);
  });
});
