/**
 * The default app as users run it: the `oxy` command in a child process, with a config file.
 * It logs where each endpoint listens, serves curl, answers /health on the telemetry server,
 * blocks loopback by default, and exits 0 on SIGTERM after draining.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { curl, startHttpUpstream } from '../src/testing/index.ts';

const bin = new URL('../bin/oxy', import.meta.url).pathname;

test('oxy starts, logs its endpoint, refuses loopback by default (403), and stops on SIGTERM', async () => {
  const upstream = await startHttpUpstream({ '/': { body: 'default app works' } });
  after(() => upstream.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-default-'));
  const config = path.join(dir, 'oxy.yaml');
  fs.writeFileSync(
    config,
    [
      'endpoints:',
      '  main:',
      '    addr: "127.0.0.1:0"',
      'restart:',
      `  socket: "${dir}/restart.sock"`,
      'telemetry:',
      '  logging:',
      '    output: stderr',
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  after(() => child.kill('SIGKILL'));
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  const addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no endpoint log line in: ${log}`)), 10_000);
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /endpoint listening.*addr=(\S+)/.exec(log);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  // Loopback upstreams are refused by the default blocked_cidrs.
  const blocked = await curl([
    '-x',
    `http://${addr}`,
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    `${upstream.origin}/`,
  ]);
  assert.equal(blocked.stdout, '403');
  const tunnel = await curl(['-p', '-x', `http://${addr}`, '-w', '%{http_connect}', `${upstream.origin}/`]);
  assert.equal(tunnel.stdout, '403');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, log);
});
