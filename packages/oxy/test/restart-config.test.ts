/**
 * `oxy --restart -c FILE…` starts the new process with the files given, not the running
 * instance's own: a second file whose change is visible over HTTP takes effect, the restarter
 * names the files the new process loaded (as absolute paths, since the instance runs in another
 * directory), and a later restart with the first file alone drops the second again.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  cleanEnv,
  type RestarterRun,
  ServiceUnderTest,
  waitExit,
} from '../../foundations/test/fixtures/restart-harness.ts';
import { proxiedGet, proxyPort } from './fixtures/proxied.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

const origin = http.createServer((_req, res) => res.end('origin ok'));
let target = '';
before(async () => {
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  target = `http://127.0.0.1:${(origin.address() as net.AddressInfo).port}/`;
});
const svc = new ServiceUnderTest(
  (sock) =>
    [
      'endpoints:',
      '  main:',
      '    addr: 127.0.0.1:0',
      'egress:',
      '  blocked_cidrs: []',
      'restart:',
      `  socket: ${sock}`,
      '  drain_timeout: 1s',
      'telemetry:',
      '  server:',
      '    enabled: false',
      '',
    ].join('\n'),
  APP,
);
after(() => {
  svc.cleanup();
  origin.close();
});

/** Runs `restart-app --restart -c …` in the service's directory, with file names relative to it. */
function restartWith(files: readonly string[]): Promise<RestarterRun> {
  const args = [APP, '--restart', ...files.flatMap((f) => ['-c', f])];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: cleanEnv(), cwd: svc.dir }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

test('the restarted process loads the files given to --restart, and says so', async () => {
  const first = await svc.start();
  const port = await proxyPort(svc);
  assert.equal(await proxiedGet(port, target, false), 'origin ok');

  fs.writeFileSync(path.join(svc.dir, 'second.yaml'), 'egress:\n  blocked_cidrs: ["127.0.0.0/8"]\n');
  const r = await restartWith(['config.yaml', 'second.yaml']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const files = `${path.join(svc.dir, 'config.yaml')}, ${path.join(svc.dir, 'second.yaml')}`;
  assert.match(
    r.stdout,
    new RegExp(`restart complete: new process \\d+ loaded ${files.replaceAll('.', '\\.')}`),
  );
  const second = await svc.waitGeneration(2);
  assert.ok(await waitExit(first.pid, 5000), 'the old process drained and exited');
  await assert.rejects(proxiedGet(port, target, false), /status 403/, 'the second file took effect');

  const back = await restartWith(['config.yaml']);
  assert.equal(back.code, 0, back.stdout + back.stderr);
  assert.match(back.stdout, /loaded \S*config\.yaml\n$/);
  await svc.waitGeneration(3);
  assert.ok(await waitExit(second.pid, 5000));
  assert.equal(await proxiedGet(port, target, false), 'origin ok');
});
