/**
 * Two instances of the default app on one host, each with its own config file and default
 * restart settings (no restart.socket), start side by side and each restarts through
 * `oxy --restart -c FILE`: their default restart sockets differ (per user, per config file).
 * XDG_RUNTIME_DIR points at a private directory of the test, as systemd's per-user one would.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';

const bin = new URL('../bin/oxy', import.meta.url).pathname;
const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-side-by-side-'));
const runtimeDir = path.join(dir, 'run');
fs.mkdirSync(runtimeDir, { mode: 0o700 });
const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: runtimeDir };
delete env.NODE_TEST_CONTEXT;
const pids = new Set<number>();
after(() => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Named boundary: the process has already exited.
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

function writeConfig(name: string): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(
    file,
    [
      'endpoints:',
      '  main:',
      '    addr: "127.0.0.1:0"',
      'telemetry:',
      '  logging:',
      '    output: stderr',
    ].join('\n'),
  );
  return file;
}

/** Starts `oxy -c config` and resolves once it logged "ready". */
async function start(config: string): Promise<ChildProcess> {
  const child = spawn(bin, ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'], env });
  pids.add(child.pid!);
  let log = '';
  await new Promise<void>((resolve, reject) => {
    // A minute: Node.js processes starting on a loaded two-core machine have taken over 15 s.
    const timer = setTimeout(() => reject(new Error(`not ready: ${log}`)), 60_000);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${log}`)));
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (/\bready\b/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

test('two instances with default restart settings start side by side and each restarts', async () => {
  const a = writeConfig('a');
  const b = writeConfig('b');
  await Promise.all([start(a), start(b)]);
  const sockets = fs.readdirSync(runtimeDir).filter((f) => f.endsWith('.sock'));
  assert.equal(sockets.length, 2, `two restart sockets in ${runtimeDir}: ${sockets.join(', ')}`);
  const restarts = await Promise.all(
    [a, b].map((config) => run(bin, ['--restart', '-c', config], { env, timeout: 30_000 })),
  );
  const newPids = restarts.map((r) => {
    const m = /restart complete: new process (\d+)/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    pids.add(Number(m[1]));
    return Number(m[1]);
  });
  assert.notEqual(newPids[0], newPids[1]);
});
