/**
 * `workers: 2` end to end, with real processes: the supervisor spawns two workers that both
 * accept on the same listening socket (their per-worker counters in the supervisor's
 * `/metrics` show it), a killed worker is respawned while service continues, SIGTERM drains
 * and exits 0 leaving no process behind, and `oxy --restart` under a small load loses no
 * request and hands each worker's state to the matching new worker.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  cleanEnv,
  isAlive,
  ServiceUnderTest,
  waitExit,
} from '../../foundations/test/fixtures/restart-harness.ts';
import { proxiedGet, proxyPort } from './fixtures/proxied.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

const config = (sock: string, telemetryPort: number, drain = '3s'): string =>
  [
    'workers: 2',
    'endpoints:',
    '  main:',
    '    addr: 127.0.0.1:0',
    'egress:',
    '  blocked_cidrs: []', // the test's origin lives on loopback
    'restart:',
    `  socket: ${sock}`,
    `  drain_timeout: ${drain}`,
    'telemetry:',
    '  server:',
    `    addr: 127.0.0.1:${telemetryPort}`,
    '',
  ].join('\n');

/** A fixed telemetry port per test (below the ephemeral range), as scrape configs have. */
const freshPort = (): number => 20000 + Math.floor(Math.random() * 10000);

function get(port: number, pathname: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** Worker pids and restart counts from the supervisor's `/health`. */
async function workers(
  telemetryPort: number,
): Promise<{ ready: number; pids: number[]; restarts: number[] }> {
  const { body } = await get(telemetryPort, '/health');
  const rows = [...body.matchAll(/worker (\d+): (\w+) pid=(\d+|-) restarts=(\d+)/g)];
  return {
    ready: rows.filter((r) => r[2] === 'ready').length,
    pids: rows.map((r) => Number(r[3])),
    restarts: rows.map((r) => Number(r[4])),
  };
}

/** `oxy_ingress_connections_total` per worker, from the supervisor's `/metrics`. */
async function acceptedPerWorker(telemetryPort: number): Promise<Map<string, number>> {
  const { status, body } = await get(telemetryPort, '/metrics');
  assert.equal(status, 200);
  const out = new Map<string, number>();
  for (const m of body.matchAll(/^\w*ingress_connections_total\{([^}]*)\} (\d+)/gm)) {
    const worker = /worker="([^"]+)"/.exec(m[1] as string)?.[1] ?? '?';
    out.set(worker, (out.get(worker) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Pids of live processes whose command line names `configFile`. */
function running(configFile: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(configFile) && isAlive(Number(pid));
      } catch {
        return false; // boundary: the process ended while we looked
      }
    })
    .map(Number);
}

/** Polls `check` until true; the default minute covers a supervisor and its workers starting on a loaded machine (over 15 s seen). */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('oxy with workers: 2', () => {
  const origin = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => res.end('origin ok'));
  let target = '';
  const services: ServiceUnderTest[] = [];
  const children: ChildProcess[] = [];
  const extraPids: number[] = [];
  before(async () => {
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    target = `http://127.0.0.1:${(origin.address() as net.AddressInfo).port}/`;
  });
  after(() => {
    for (const s of services) s.cleanup();
    for (const c of children) c.kill('SIGKILL');
    for (const pid of extraPids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    origin.closeAllConnections();
    origin.close();
  });

  // Both this test and the next start several Oxy processes in turn; on a loaded two-core machine
  // they took 83 s and 179 s (the suite's default is 120 s).
  it('serves through both workers, respawns a killed one, and drains on SIGTERM (exit 0, no orphans)', {
    timeout: 360_000,
  }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-workers-'));
    const telemetryPort = freshPort();
    const file = path.join(dir, 'config.yaml');
    fs.writeFileSync(file, config(path.join(dir, 'restart.sock'), telemetryPort, '2s'));
    const child = spawn(process.execPath, [APP, '-c', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv(),
    });
    children.push(child);
    let output = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await until('two ready workers', async () => (await workers(telemetryPort)).ready === 2);
    const port = Number(/endpoint listening .*addr=127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
    const before = await workers(telemetryPort);
    extraPids.push(...before.pids);

    // Both workers accept on the one socket: many concurrent new connections reach both.
    for (let round = 0; round < 10; round++) {
      const bodies = await Promise.all(Array.from({ length: 20 }, () => proxiedGet(port, target, false)));
      assert.ok(bodies.every((b) => b === 'origin ok'));
      const per = await acceptedPerWorker(telemetryPort);
      if ((per.get('0') ?? 0) > 0 && (per.get('1') ?? 0) > 0) break;
    }
    const per = await acceptedPerWorker(telemetryPort);
    assert.ok((per.get('0') ?? 0) > 0 && (per.get('1') ?? 0) > 0, `accepted per worker: ${[...per]}`);
    console.log(`accepted per worker: ${JSON.stringify(Object.fromEntries(per))}`);

    // A killed worker is respawned; service continues meanwhile.
    const victim = before.pids[1] as number;
    process.kill(victim, 'SIGKILL');
    let served = 0;
    const deadline = Date.now() + 60_000; // a new worker process starting on a loaded machine
    for (;;) {
      if ((await proxiedGet(port, target, false).catch(() => '')) === 'origin ok') served++;
      const now = await workers(telemetryPort);
      if (now.ready === 2 && now.restarts[1] === 1) {
        assert.notEqual(now.pids[1], victim, 'a new process in slot 1');
        assert.equal(now.pids[0], before.pids[0], 'worker 0 untouched');
        extraPids.push(now.pids[1] as number);
        break;
      }
      assert.ok(Date.now() < deadline, `worker 1 not respawned:\n${output}`);
    }
    assert.ok(served > 0, 'requests served while worker 1 was down');
    assert.match(output, /worker exited unexpectedly; respawning/);
    for (let i = 0; i < 5; i++) assert.equal(await proxiedGet(port, target, false), 'origin ok');

    // SIGTERM: the supervisor drains every worker and exits 0; nothing is left.
    const all = (await workers(telemetryPort)).pids;
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
    for (const pid of all) assert.ok(await waitExit(pid, 3000), `worker ${pid} outlived the supervisor`);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('oxy --restart with workers: 2 under a load loop loses no request; worker i gets old worker i state', {
    timeout: 360_000,
  }, async () => {
    const telemetryPort = freshPort();
    const svc = new ServiceUnderTest((sock) => config(sock, telemetryPort), APP);
    services.push(svc);
    await svc.start();
    await svc.waitGeneration(2); // two workers, one start() line each
    assert.deepEqual(
      svc.generations.map((g) => g.counter),
      [1, 1],
    );
    // The supervisor and both workers say they were not restarted (a worker's lifecycle has a
    // channel to its supervisor, which is not a restart's handover).
    const lines = (match: (l: string) => boolean) =>
      `${svc.stderr}${svc.stdoutText}`.split('\n').filter(match).length;
    const readyLines = (restarted: boolean) =>
      lines((l) => / ready .*restarted=/.test(l) && l.includes(`restarted=${restarted}`));
    await until('three ready lines', async () => readyLines(false) === 3);
    assert.equal(readyLines(true), 0);
    const port = await proxyPort(svc, 300);
    const stop = { done: false };
    let ok = 0;
    const errors: string[] = [];
    const loop = async (keepAlive: boolean): Promise<void> => {
      const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
      while (!stop.done) {
        try {
          assert.equal(await proxiedGet(port, target, agent), 'origin ok');
          ok++;
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
      if (agent) agent.destroy();
    };
    const loops = [loop(true), loop(false)];
    await sleep(200);
    const supervisors: number[] = [];
    for (let i = 1; i <= 2; i++) {
      const r = await svc.restart();
      assert.equal(r.code, 0, `restart ${i}: ${r.stdout}${r.stderr}`);
      const pid = Number(/new process (\d+)/.exec(r.stdout)?.[1]);
      supervisors.push(pid);
      extraPids.push(pid);
      await svc.waitGeneration(2 + 2 * i);
      await sleep(200);
    }
    await sleep(300);
    stop.done = true;
    await Promise.all(loops);
    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} failed requests`);
    assert.ok(ok > 50, `only ${ok} requests`);
    // Each new worker's start() got its predecessor's counter.
    assert.deepEqual(svc.generations.map((g) => g.counter).sort(), [1, 1, 2, 2, 3, 3]);
    // Old workers and old supervisors have exited; the newest serves with two workers.
    for (const g of svc.generations.slice(0, -2))
      assert.ok(await waitExit(g.pid, 8000), `worker ${g.pid} still runs`);
    for (const pid of supervisors.slice(0, -1))
      assert.ok(await waitExit(pid, 8000), `supervisor ${pid} still runs`);
    assert.ok(isAlive(supervisors.at(-1) as number));
    assert.equal((await workers(telemetryPort)).ready, 2);
    // Each restart's supervisor and its two workers say they were restarted.
    await until('six restarted ready lines', async () => readyLines(true) === 6);
    // The old supervisors and their workers each say they drained for a restart.
    const drainedLines = (reason: string) =>
      lines((l) => l.includes('drained; exiting') && l.includes(`reason=${reason}`));
    await until('six drained-for-restart lines', async () => drainedLines('restart') === 6);
    assert.equal(drainedLines('shutdown'), 0);
    console.log(`workers: 2, ${ok} proxied requests over 2 restarts, ${errors.length} failed`);
  });

  it('/health stays 200 through oxy --restart: the new supervisor shares the telemetry socket while its workers start', async () => {
    const telemetryPort = freshPort();
    const svc = new ServiceUnderTest((sock) => config(sock, telemetryPort, '1s'), APP);
    services.push(svc);
    await svc.start();
    await svc.waitGeneration(2);
    await until('two ready workers', async () => (await workers(telemetryPort)).ready === 2);
    // Both supervisors accept on the telemetry socket from the new one's start until it is
    // ready: a health check reaching the new one must not see its starting workers as a 503.
    const stop = { done: false };
    const statuses = new Map<number, number>();
    const unhealthy: string[] = [];
    const poll = (async () => {
      while (!stop.done) {
        const r = await get(telemetryPort, '/health').catch(() => null);
        if (r !== null) {
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status !== 200) unhealthy.push(r.body.split('\n')[0] as string);
        }
        await sleep(5);
      }
    })();
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    extraPids.push(Number(/new process (\d+)/.exec(r.stdout)?.[1]));
    await svc.waitGeneration(4);
    await sleep(200);
    stop.done = true;
    await poll;
    assert.deepEqual(
      unhealthy.slice(0, 5),
      [],
      `${unhealthy.length} unhealthy answers of ${[...statuses.values()].reduce((a, b) => a + b, 0)}`,
    );
    assert.ok((statuses.get(200) ?? 0) > 20, 'the health check ran through the restart');
  });

  it('restarts from workers: 1 to 2 and back: the sockets and worker 0 state follow', async () => {
    const telemetryPort = freshPort();
    const single = (sock: string): string =>
      config(sock, telemetryPort, '1s').replace('workers: 2', 'workers: 1');
    const svc = new ServiceUnderTest(single, APP);
    services.push(svc);
    const first = await svc.start();
    const port = await proxyPort(svc, 300);
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
    svc.writeConfig(config(svc.socket, telemetryPort, '1s'));
    const up = await svc.restart();
    assert.equal(up.code, 0, up.stdout + up.stderr);
    const supervisor = Number(/new process (\d+)/.exec(up.stdout)?.[1]);
    extraPids.push(supervisor);
    await svc.waitGeneration(3);
    // Worker 0 continues the single process's state; worker 1 starts afresh.
    assert.deepEqual(
      svc.generations
        .slice(1)
        .map((g) => g.counter)
        .sort(),
      [1, 2],
    );
    assert.ok(await waitExit(first.pid, 5000), 'the single process drained and exited');
    await until('two ready workers', async () => (await workers(telemetryPort)).ready === 2);
    assert.equal(await proxiedGet(port, target, false), 'origin ok', 'same port, now served by workers');
    svc.writeConfig(single(svc.socket));
    const down = await svc.restart();
    assert.equal(down.code, 0, down.stdout + down.stderr);
    const last = await svc.waitGeneration(4);
    assert.equal(last.counter, 3, 'the single process got old worker 0 state');
    for (const g of svc.generations.slice(1, 3))
      assert.ok(await waitExit(g.pid, 5000), `worker ${g.pid} exited`);
    assert.ok(await waitExit(supervisor, 5000), 'the supervisor exited after its workers');
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
  });

  it('a version whose workers fail in start() fails the restart (exit 1); the old workers serve on', async () => {
    const failFile = path.join(os.tmpdir(), `oxy-workers-fail-${process.pid}`);
    after(() => fs.rmSync(failFile, { force: true }));
    const telemetryPort = freshPort();
    const svc = new ServiceUnderTest((sock) => config(sock, telemetryPort, '1s'), APP);
    services.push(svc);
    await svc.start({ env: { OXY_TEST_FAIL_FILE: failFile } });
    await svc.waitGeneration(2);
    const port = await proxyPort(svc, 300);
    const before = await workers(telemetryPort);
    fs.writeFileSync(failFile, '');
    const r = await svc.restart();
    fs.rmSync(failFile);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /worker \d \(pid \d+\): failed to start: this version refuses to start/);
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
    const now = await workers(telemetryPort);
    assert.deepEqual(now.pids, before.pids, 'the old workers still serve');
    assert.equal(now.ready, 2);
    // The failed generation left nothing behind: the old supervisor and its two workers remain.
    await until('the failed generation to be gone', async () => running(svc.config).length === 3);
  });

  it('SIGTERM while the workers start: each drains once ready and exits, none is left to be killed', {
    timeout: 120_000,
  }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-workers-'));
    const file = path.join(dir, 'config.yaml');
    // A long drain: a worker that missed the word would serve on until deadline + grace, then be killed.
    fs.writeFileSync(file, config(path.join(dir, 'restart.sock'), freshPort(), '60s'));
    const child = spawn(process.execPath, [APP, '-c', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv(),
    });
    children.push(child);
    let output = '';
    const workerPids: number[] = [];
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      output += d;
      for (const m of d.matchAll(/^\{"pid":(\d+)/gm)) workerPids.push(Number(m[1]));
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await until('the supervisor to start its workers', async () => output.includes('starting workers'));
    child.kill('SIGTERM');
    const started = Date.now();
    const code = await Promise.race([exited, sleep(45_000).then(() => 'still running' as const)]);
    assert.equal(code, 0, output);
    assert.ok(Date.now() - started < 45_000);
    assert.doesNotMatch(output, /killing them/);
    extraPids.push(...workerPids);
    for (const pid of workerPids)
      assert.ok(await waitExit(pid, 3000), `worker ${pid} outlived the supervisor`);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('workers drain and exit when their supervisor is killed (SIGKILL): no orphans', async () => {
    const telemetryPort = freshPort();
    const svc = new ServiceUnderTest((sock) => config(sock, telemetryPort, '1s'), APP);
    services.push(svc);
    await svc.start();
    await svc.waitGeneration(2);
    await until('two ready workers', async () => (await workers(telemetryPort)).ready === 2);
    const pids = svc.generations.map((g) => g.pid);
    const supervisor = running(svc.config).find((p) => !pids.includes(p)) as number;
    assert.ok(supervisor > 0, 'the supervisor process');
    process.kill(supervisor, 'SIGKILL');
    for (const pid of pids) assert.ok(await waitExit(pid, 5000), `worker ${pid} outlived its supervisor`);
  });

  it('oxy --generate documents workers', async () => {
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, [APP, '--generate', '-'], { env: cleanEnv() });
      let text = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => {
        text += d;
      });
      c.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`exit ${code}`))));
    });
    assert.match(
      out,
      /^# .*Processes accepting connections on the shared listening sockets[^\n]*\n(#[^\n]*\n)*workers: 1$/m,
    );
  });
});
