/**
 * Graceful restarts with real processes: restarts under continuous load lose no request,
 * state reaches the new process, tunnels survive until drain_timeout, and exactly one
 * instance remains.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, ServiceUnderTest, waitExit } from './fixtures/restart-harness.ts';

interface LoadResult {
  ok: number;
  failed: number;
  errors: string[];
  pids: Set<string>;
}

function get(port: number, agent: http.Agent | false): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/', agent, headers: agent === false ? { connection: 'close' } : {} },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}`)),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

/** Runs one client loop until `stop.done`; keep-alive clients reuse one socket. */
async function clientLoop(
  port: number,
  keepAlive: boolean,
  stop: { done: boolean },
  out: LoadResult,
): Promise<void> {
  const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
  while (!stop.done) {
    try {
      const body = await get(port, agent);
      out.ok++;
      out.pids.add(body.split(' ')[0] as string);
    } catch (e) {
      out.failed++;
      if (out.errors.length < 10) out.errors.push((e as Error).message);
    }
  }
  if (agent) agent.destroy();
}

describe('graceful restart', () => {
  const services: ServiceUnderTest[] = [];
  after(() => {
    for (const s of services) s.cleanup();
  });

  // Twenty-one Node.js processes start one after another (each new generation and each
  // restarter) while the load loops keep the cores busy: on a loaded two-core machine a restart
  // took 5 to 20 s, and the ten 117 to 300 s, past the suite's default 120 s.
  it('10 restarts under continuous load: zero failed requests, every restarter exits 0', {
    timeout: 360_000,
  }, async () => {
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 5s\n`);
    services.push(svc);
    const first = await svc.start();
    const load: LoadResult = { ok: 0, failed: 0, errors: [], pids: new Set() };
    const stop = { done: false };
    const loops = [
      clientLoop(first.port, true, stop, load),
      clientLoop(first.port, true, stop, load),
      clientLoop(first.port, false, stop, load),
    ];
    await sleep(200);
    for (let i = 1; i <= 10; i++) {
      const r = await svc.restart();
      assert.equal(r.code, 0, `restart ${i}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /restart complete: new process \d+/);
      const gen = await svc.waitGeneration(i + 1);
      assert.equal(gen.port, first.port, 'the same listening socket serves');
      await sleep(100);
    }
    await sleep(300);
    stop.done = true;
    await Promise.all(loops);
    assert.equal(load.failed, 0, `failed requests: ${load.errors.join('; ')}`);
    assert.ok(load.ok > 100, `only ${load.ok} requests completed`);
    assert.ok(load.pids.size >= 5, `requests were served by ${load.pids.size} processes`);
    // Exactly one instance remains: every old generation has drained and exited.
    for (const g of svc.generations.slice(0, -1))
      assert.ok(await waitExit(g.pid, 8000), `pid ${g.pid} still runs`);
    assert.ok(isAlive(svc.current.pid));
    console.log(
      `load: ${load.ok} requests over 10 restarts, ${load.failed} failed, ${load.pids.size} processes`,
    );
  });

  it('hands the app state to the new process, and the restart socket is mode 0600', async () => {
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\n`);
    services.push(svc);
    const first = await svc.start();
    assert.equal(fs.statSync(svc.socket).mode & 0o777, 0o600);
    for (let i = 1; i <= 3; i++) assert.equal(await get(first.port, false), `${first.pid} ${i}\n`);
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const second = await svc.waitGeneration(2);
    assert.equal(second.restarted, true);
    assert.equal(second.counter, 3, 'counter restored from stateForRestart');
    assert.equal(await get(first.port, false), `${second.pid} 4\n`);
    // The restart socket itself was handed over: same file, still 0600, answered by the new process.
    assert.equal(fs.statSync(svc.socket).mode & 0o777, 0o600);
    assert.ok(await waitExit(first.pid, 5000));
    const r2 = await svc.restart();
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal((await svc.waitGeneration(3)).counter, 4);
  });

  it('hands over a Unix socket endpoint without removing its file', async () => {
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\n`);
    services.push(svc);
    const httpSock = `${svc.dir}/http.sock`;
    svc.writeConfig(`restart:\n  socket: ${svc.socket}\n  drain_timeout: 2s\naddr: ${httpSock}\n`);
    const first = await svc.start();
    const getUnix = (): Promise<string> =>
      new Promise((resolve, reject) => {
        http
          .get({ socketPath: httpSock, path: '/', agent: false }, (res) => {
            let body = '';
            res.setEncoding('utf8').on('data', (d: string) => {
              body += d;
            });
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    assert.equal(await getUnix(), `${first.pid} 1\n`);
    assert.equal((await svc.restart()).code, 0);
    const second = await svc.waitGeneration(2);
    assert.ok(await waitExit(first.pid, 5000));
    assert.ok(fs.statSync(httpSock).isSocket(), 'the old process did not unlink the path');
    assert.equal(await getUnix(), `${second.pid} 2\n`);
  });

  it('keeps a CONNECT tunnel passing data until drain_timeout, then closes it; one instance remains', async () => {
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    after(() => echo.close());
    const echoPort = (echo.address() as net.AddressInfo).port;
    const svc = new ServiceUnderTest((sock) => `restart:\n  socket: ${sock}\n  drain_timeout: 2s\n`);
    services.push(svc);
    const first = await svc.start();

    const tunnel = await new Promise<net.Socket>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: first.port,
        method: 'CONNECT',
        path: `127.0.0.1:${echoPort}`,
      });
      req.on('connect', (res, socket) =>
        res.statusCode === 200 ? resolve(socket) : reject(new Error('refused')),
      );
      req.on('error', reject);
      req.end();
    });
    const closed = new Promise<number>((resolve) => tunnel.on('close', () => resolve(Date.now())));
    tunnel.on('error', () => {});
    let received = '';
    tunnel.setEncoding('utf8').on('data', (d: string) => {
      received += d;
    });
    const roundTrip = async (text: string): Promise<void> => {
      const want = received.length + text.length;
      tunnel.write(text);
      for (let i = 0; i < 100 && received.length < want; i++) await sleep(10);
      assert.ok(received.endsWith(text), `echo of ${text} missing`);
    };
    await roundTrip('before;');

    const r = await svc.restart();
    assert.equal(r.code, 0, r.stderr);
    const restartedAt = Date.now();
    const second = await svc.waitGeneration(2);
    // The tunnel lives in the old process, which keeps it running while it drains.
    for (let i = 0; i < 12; i++) {
      await roundTrip(`during-${i};`);
      await sleep(100);
    }
    assert.ok(isAlive(first.pid), 'old process drains while the tunnel is open');
    const closedAt = await closed;
    const lived = closedAt - restartedAt;
    assert.ok(
      lived >= 1500 && lived < 5000,
      `tunnel closed ${lived} ms after the restart (drain_timeout 2s)`,
    );
    assert.ok(await waitExit(first.pid, 3000), 'old process exited after the drain');
    assert.ok(isAlive(second.pid), 'new process serves');
    assert.match(await get(first.port, false), new RegExp(`^${second.pid} `));
  });
});
