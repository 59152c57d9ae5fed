/**
 * Graceful restarts of a real Foundations service with the syscall sandbox on (kill_process):
 * the restarter, the handover of listeners and state, the next generation starting under the
 * inherited filter, and draining all keep working, with no failed request under load.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { cleanEnv, isAlive, ServiceUnderTest, waitExit } from '../../test/fixtures/restart-harness.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/sandboxed-restart-service.ts', import.meta.url));
const services: ServiceUnderTest[] = [];
after(() => {
  for (const s of services) s.cleanup();
});

/** Runs the fixture in restarter mode (`--restart -c FILE`) as its own process. */
function restarter(config: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [FIXTURE, '--restart', '-c', config],
      { env: cleanEnv() },
      (err, stdout, stderr) => {
        resolve({
          code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1,
          out: stdout + stderr,
        });
      },
    );
  });
}

function get(port: number, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}`)),
        );
      })
      .on('error', reject);
  });
}

// Each generation and each restarter is a Node.js process starting under a load loop: 121 s on
// a loaded two-core machine (48 s on a quieter one), past the suite's default 120 s.
test('sandboxed service: 3 graceful restarts under load, no failed request, every generation filtered', {
  timeout: 360_000,
}, async () => {
  const config = (sock: string) =>
    `restart:\n  socket: ${sock}\n  drain_timeout: 3s\n` +
    'security:\n  syscall_sandboxing:\n    enabled: true\n    violation_action: kill_process\n';
  const svc = new ServiceUnderTest(config);
  services.push(svc);
  const first = (await svc.start({ args: [FIXTURE, '-c', svc.config] })) as unknown as {
    port: number;
    ioUring: string;
    filters: number;
    pid: number;
  };
  assert.equal(first.ioUring, 'no_rings', 'deny_io_uring restarted the first generation without rings');
  assert.ok(first.filters >= 2, 'the io_uring filter and the sandbox');

  const stop = { done: false };
  let ok = 0;
  const errors: string[] = [];
  const loop = async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    while (!stop.done) {
      try {
        await get(first.port, agent);
        ok++;
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    agent.destroy();
  };
  const loops = [loop(), loop()];
  await sleep(100);
  for (let i = 1; i <= 3; i++) {
    const r = await restarter(svc.config);
    assert.equal(r.code, 0, `restart ${i}: ${r.out}\n${svc.stderr}`);
    const gen = (await svc.waitGeneration(i + 1)) as unknown as {
      port: number;
      filters: number;
      ioUring: string;
    };
    assert.equal(gen.port, first.port);
    assert.equal(gen.ioUring, 'no_rings');
    assert.ok(
      gen.filters > first.filters,
      'the next generation runs under the inherited filters plus its own',
    );
    await sleep(100);
  }
  stop.done = true;
  await Promise.all(loops);
  assert.deepEqual(errors.slice(0, 5), []);
  assert.ok(ok > 50, `only ${ok} requests`);
  for (const g of svc.generations.slice(0, -1))
    assert.ok(await waitExit(g.pid, 8000), `pid ${g.pid} still runs`);
  assert.ok(isAlive(svc.current.pid));
  assert.doesNotMatch(svc.stderr, /SIGSYS|Bad system call/);
});
