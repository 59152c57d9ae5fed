/**
 * Oxy's graceful restarts end to end, with real processes: `oxy --restart -c FILE` under
 * continuous proxied load loses no request, a CONNECT tunnel through the proxy survives
 * until `restart.drain_timeout`, `AppLifecycleHook.stateForRestart` reaches the new
 * process's `start()`, and a version that cannot start leaves the old one serving.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, ServiceUnderTest, waitExit } from '../../foundations/test/fixtures/restart-harness.ts';
import { proxiedGet, proxyPort } from './fixtures/proxied.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

const config = (sock: string, drain = '5s', telemetry = '    enabled: false'): string =>
  [
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
    telemetry,
    '',
  ].join('\n');

describe('oxy graceful restart', () => {
  const origin = http.createServer({ keepAliveTimeout: 60_000 }, (_req, res) => res.end('origin ok'));
  const echo = net.createServer((s) => s.pipe(s));
  let target = '';
  let echoPort = 0;
  const services: ServiceUnderTest[] = [];
  before(async () => {
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    target = `http://127.0.0.1:${(origin.address() as net.AddressInfo).port}/`;
    echoPort = (echo.address() as net.AddressInfo).port;
  });
  after(() => {
    for (const s of services) s.cleanup();
    origin.closeAllConnections();
    origin.close();
    echo.close();
  });

  // Twenty-one Oxy processes start one after another (each new generation and each restarter)
  // while the load loops keep the cores busy: under load the ten restarts took past the suite's
  // default 120 s (they had all succeeded, 37,163 requests, none failed).
  it('10 restarts under proxied load: zero failed requests, each restarter exits 0, state handed over', {
    timeout: 360_000,
  }, async () => {
    const svc = new ServiceUnderTest((sock) => config(sock), APP);
    services.push(svc);
    const first = await svc.start();
    assert.equal(first.counter, 1);
    const port = await proxyPort(svc);
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
    const loops = [loop(true), loop(true), loop(false)];
    await sleep(200);
    for (let i = 1; i <= 10; i++) {
      const r = await svc.restart();
      assert.equal(r.code, 0, `restart ${i}: ${r.stdout}${r.stderr}`);
      const gen = await svc.waitGeneration(i + 1);
      assert.equal(gen.counter, i + 1, 'stateForRestart reached start()');
      await sleep(100);
    }
    await sleep(300);
    stop.done = true;
    await Promise.all(loops);
    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} failed requests`);
    assert.ok(ok > 100, `only ${ok} requests`);
    for (const g of svc.generations.slice(0, -1))
      assert.ok(await waitExit(g.pid, 8000), `pid ${g.pid} still runs`);
    assert.ok(isAlive(svc.current.pid));
    console.log(`oxy load: ${ok} proxied requests over 10 restarts, ${errors.length} failed`);
  });

  it('keeps a CONNECT tunnel until drain_timeout, then closes it; one instance remains', async () => {
    const svc = new ServiceUnderTest((sock) => config(sock, '2s'), APP);
    services.push(svc);
    const first = await svc.start();
    const port = await proxyPort(svc);
    const tunnel = await new Promise<net.Socket>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: `127.0.0.1:${echoPort}` });
      req.on('connect', (res, socket) =>
        res.statusCode === 200 ? resolve(socket) : reject(new Error('refused')),
      );
      req.on('error', reject);
      req.end();
    });
    tunnel.on('error', () => {});
    const closed = new Promise<number>((resolve) => tunnel.on('close', () => resolve(Date.now())));
    let received = '';
    tunnel.setEncoding('utf8').on('data', (d: string) => {
      received += d;
    });
    const roundTrip = async (text: string): Promise<void> => {
      tunnel.write(text);
      for (let i = 0; i < 100 && !received.endsWith(text); i++) await sleep(10);
      assert.ok(received.endsWith(text), `echo of ${text} missing`);
    };
    await roundTrip('before;');
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const restartedAt = Date.now();
    // The old process carries the tunnel while it drains: round trips for the first 1.2 s of
    // the 2 s drain_timeout (a fixed count of them could run past it on a loaded machine).
    let trips = 0;
    while (trips === 0 || Date.now() - restartedAt < 1200) {
      await roundTrip(`during-${trips++};`);
      await sleep(100);
    }
    const second = await svc.waitGeneration(2);
    const lived = (await closed) - restartedAt;
    assert.ok(
      lived >= 1500 && lived < 5000,
      `tunnel closed ${lived} ms after the restart (drain_timeout 2s)`,
    );
    assert.ok(await waitExit(first.pid, 3000), 'old process exited');
    assert.ok(isAlive(second.pid));
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
  });

  it('hands over a telemetry server on a fixed port, so the new process does not hit EADDRINUSE', async () => {
    const health = (p: number): Promise<number> =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: p, path: '/health', agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          })
          .on('error', reject);
      });
    // A fixed port (below the ephemeral range), as Prometheus scraping configs have.
    const telemetryPort = 20000 + Math.floor(Math.random() * 10000);
    const svc = new ServiceUnderTest(
      (sock) => config(sock, '2s', `    addr: 127.0.0.1:${telemetryPort}`),
      APP,
    );
    services.push(svc);
    const first = await svc.start();
    assert.equal(await health(telemetryPort), 200);
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await svc.waitGeneration(2);
    assert.ok(await waitExit(first.pid, 5000));
    assert.equal(await health(telemetryPort), 200, 'the new process serves telemetry on the same socket');
  });

  it('serves on a socket from systemd-socket-activate (matched by name) and restarts keep it', {
    skip:
      spawnSync('systemd-socket-activate', ['--help']).status === 0 ? false : 'needs systemd-socket-activate',
  }, async () => {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const svc = new ServiceUnderTest((sock) => config(sock, '2s'), APP);
    services.push(svc);
    const args = ['-l', `127.0.0.1:${port}`, '--fdname=main', process.execPath, APP, '-c', svc.config];
    const started = svc.start({ command: 'systemd-socket-activate', args });
    // The activator starts oxy on the first connection, which waits in the accept queue.
    let body = '';
    for (let i = 0; body === '' && i < 100; i++) {
      body = await proxiedGet(port, target, false).catch(async () => {
        await sleep(50);
        return '';
      });
    }
    assert.equal(body, 'origin ok');
    const first = await started;
    assert.equal(await proxyPort(svc), port, 'endpoint main is the systemd socket, not a fresh port 0');
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await svc.waitGeneration(2);
    assert.ok(await waitExit(first.pid, 5000));
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
  });

  it('a version that fails in start() fails the restart (exit 1); the old instance serves on', async () => {
    const failFile = path.join(path.dirname(APP), `.fail-${process.pid}`);
    after(() => fs.rmSync(failFile, { force: true }));
    const svc = new ServiceUnderTest((sock) => config(sock, '2s'), APP);
    services.push(svc);
    const first = await svc.start({ env: { OXY_TEST_FAIL_FILE: failFile } });
    const port = await proxyPort(svc);
    fs.writeFileSync(failFile, '');
    const r = await svc.restart();
    fs.rmSync(failFile);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /this version refuses to start/);
    assert.ok(isAlive(first.pid));
    assert.equal(await proxiedGet(port, target, false), 'origin ok');
    assert.equal(fs.statSync(svc.socket).mode & 0o777, 0o600);
  });
});
