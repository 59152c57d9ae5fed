/**
 * Restart failure paths and signals, with real processes: the restarter's exit code says
 * what happened, and a failed restart leaves the old instance serving.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RESTARTER_EXIT, runRestarter } from '../src/restart/index.ts';
import {
  cleanEnv,
  get,
  isAlive,
  runRestarterProcess,
  ServiceUnderTest,
  waitExit,
} from './fixtures/restart-harness.ts';

const config = (sock: string, extra = ''): string =>
  `restart:\n  socket: ${sock}\n  drain_timeout: 2s\n${extra}`;

describe('restart failure paths', () => {
  const svc = new ServiceUnderTest((sock) => config(sock));
  after(() => svc.cleanup());

  it('an invalid config fails in the restarter (exit 2) before the instance is contacted', async () => {
    const first = await svc.start();
    svc.writeConfig(`restart:\n  socket: ${svc.socket}\n  drain_timeout: soon\n`);
    const r = await svc.restart();
    assert.equal(r.code, RESTARTER_EXIT.USAGE, r.stderr);
    assert.match(r.stderr, /restart\.drain_timeout/);
    await sleep(200);
    assert.doesNotMatch(svc.stderr, /restart requested/, 'the instance was not contacted');
    assert.equal(svc.generations.length, 1);
    assert.match(await get(first.port), new RegExp(`^${first.pid} `));
    svc.writeConfig(config(svc.socket));
  });

  it('a new process crashing in start() fails the restart (exit 1, with its reason); the old one serves', async () => {
    const first = svc.current;
    svc.writeConfig(config(svc.socket, 'fail_start: true\n'));
    const r = await svc.restart();
    svc.writeConfig(config(svc.socket));
    assert.equal(r.code, RESTARTER_EXIT.FAILED, r.stdout + r.stderr);
    assert.match(r.stderr, /restart failed: new process \(pid \d+\) failed to start: fail_start is set/);
    assert.equal(svc.generations.length, 1);
    assert.ok(isAlive(first.pid));
    assert.match(await get(first.port), new RegExp(`^${first.pid} `));
    // and it can still be restarted afterwards
    const ok = await svc.restart();
    assert.equal(ok.code, 0, ok.stderr);
    await svc.waitGeneration(2);
  });

  it('refuses a second restart while one is in progress (exit 4)', async () => {
    svc.writeConfig(config(svc.socket, 'start_delay: 2s\n'));
    const requested = svc.stderr.split('restart requested').length;
    const firstRun = svc.restart();
    for (let i = 0; i < 100 && svc.stderr.split('restart requested').length === requested; i++)
      await sleep(20);
    const second = await svc.restart();
    const first = await firstRun;
    svc.writeConfig(config(svc.socket));
    assert.equal(second.code, RESTARTER_EXIT.REFUSED, second.stdout + second.stderr);
    assert.match(second.stderr, /restart refused: a restart is already in progress/);
    assert.equal(first.code, 0, first.stderr);
    await svc.waitGeneration(3);
  });

  it('says clearly when no instance listens: missing file, stale socket, not a socket (exit 3)', async () => {
    const dir = svc.dir;
    const lines: string[] = [];
    const print = (line: string): void => {
      lines.push(line);
    };
    assert.equal(
      await runRestarter({ socket: path.join(dir, 'none.sock') }, { print }),
      RESTARTER_EXIT.NO_INSTANCE,
    );
    assert.match(lines.at(-1) ?? '', /no instance is listening: .*none\.sock does not exist/);

    // A stale socket file: its process died without removing it.
    const stale = path.join(dir, 'stale.sock');
    const holder = spawn(
      process.execPath,
      ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`],
      { stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() },
    );
    await new Promise((r) => holder.stdout?.once('data', r));
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    assert.ok(fs.statSync(stale).isSocket());
    assert.equal(await runRestarter({ socket: stale }, { print }), RESTARTER_EXIT.NO_INSTANCE);
    assert.match(lines.at(-1) ?? '', /no instance is listening on .*stale\.sock \(ECONNREFUSED\)/);

    const plain = path.join(dir, 'plain.sock');
    fs.writeFileSync(plain, '');
    assert.equal(await runRestarter({ socket: plain }, { print }), RESTARTER_EXIT.NO_INSTANCE);
    assert.match(lines.at(-1) ?? '', /is not a socket/);

    // The same through the CLI, as automation would run it.
    const cfg = path.join(dir, 'other.yaml');
    fs.writeFileSync(cfg, `restart:\n  socket: ${path.join(dir, 'none.sock')}\n`);
    const r = await runRestarterProcess(cfg);
    assert.equal(r.code, RESTARTER_EXIT.NO_INSTANCE, r.stderr);
    assert.match(r.stderr, /no instance is listening/);
  });
});

describe('finding the instance with the default restart socket', () => {
  // The default socket is named after the -c files, in $XDG_RUNTIME_DIR: a private one here.
  const svc = new ServiceUnderTest(() => 'restart:\n  drain_timeout: 2s\n');
  after(() => svc.cleanup());
  const env = { XDG_RUNTIME_DIR: svc.dir };

  it('other -c files exit 3 naming the socket sought and the one present; no -c finds the only one', async () => {
    const first = await svc.start({ env });
    const [own] = fs.readdirSync(svc.dir).filter((n) => n.endsWith('.sock'));
    assert.match(own ?? '', /^restart-fixture-restart-[0-9a-f]{8}\.sock$/);
    const other = path.join(svc.dir, 'other.yaml');
    fs.writeFileSync(other, 'restart:\n  drain_timeout: 2s\n');
    const wrong = await runRestarterProcess(other, undefined, env);
    assert.equal(wrong.code, RESTARTER_EXIT.NO_INSTANCE, wrong.stderr);
    assert.match(wrong.stderr, /restart-fixture-restart-[0-9a-f]{8}\.sock does not exist; .*same -c files/);
    assert.ok(wrong.stderr.includes(`present: ${path.join(svc.dir, own ?? '')})`), wrong.stderr);

    const r = await runRestarterProcess([], undefined, env);
    assert.equal(r.code, RESTARTER_EXIT.COMPLETE, r.stderr);
    assert.match(r.stdout, new RegExp(`loaded ${svc.config}`), 'kept its own files');
    await svc.waitGeneration(2);
    assert.ok(await waitExit(first.pid, 5000));
  });
});

describe('signals', () => {
  it('SIGTERM drains and exits 0, removing the restart socket', async () => {
    const svc = new ServiceUnderTest((sock) => config(sock));
    after(() => svc.cleanup());
    const first = await svc.start();
    assert.ok(fs.existsSync(svc.socket));
    process.kill(first.pid, 'SIGTERM');
    assert.ok(await waitExit(first.pid, 5000));
    assert.equal(fs.existsSync(svc.socket), false, 'restart socket removed on shutdown');
    assert.match(svc.stderr, /SIGTERM: shutting down gracefully/);
    assert.equal((await svc.restart()).code, RESTARTER_EXIT.NO_INSTANCE);
  });

  it('a second SIGTERM cuts the drain short while a tunnel holds it open', async () => {
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    after(() => echo.close());
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 30s\n`);
    after(() => svc.cleanup());
    const first = await svc.start();
    const tunnel = net.connect(first.port, '127.0.0.1');
    tunnel.on('error', () => {});
    tunnel.write(`CONNECT 127.0.0.1:${(echo.address() as net.AddressInfo).port} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await new Promise((r) => tunnel.once('data', r));
    process.kill(first.pid, 'SIGTERM');
    await sleep(500);
    assert.ok(isAlive(first.pid), 'still draining the tunnel');
    const started = Date.now();
    process.kill(first.pid, 'SIGTERM');
    assert.ok(await waitExit(first.pid, 3000), 'forced exit');
    assert.ok(Date.now() - started < 3000);
    // The process is gone before the parent has necessarily read its last stderr bytes.
    for (let i = 0; i < 100 && !/second SIGTERM: cutting the drain short/.test(svc.stderr); i++)
      await sleep(20);
    assert.match(svc.stderr, /second SIGTERM: cutting the drain short/);
    tunnel.destroy();
  });
});
