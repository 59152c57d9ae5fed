/**
 * What a drain's deadline cuts is recorded, as `drained`: the `oxy` command in a child process
 * with a `tcp` endpoint carried by the JS pump (`tunnel_splice: false`), a spliced one (the
 * addon's accept) and a CONNECT tunnel, each held open past `restart.drain_timeout`; SIGTERM.
 * Every tunnel gets its one audit record (the pump's once came after the audit file closed, and
 * was lost), and its close reason says the proxy cut it, not that the client reset it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { readBytes, startTcpEcho } from '../src/testing/index.ts';

const bin = new URL('../bin/oxy', import.meta.url).pathname;

function dial(addr: string): net.Socket {
  const i = addr.lastIndexOf(':');
  const s = net.connect(Number(addr.slice(i + 1)), addr.slice(0, i));
  s.on('error', () => {});
  return s;
}

test('tunnels cut at the drain deadline are each recorded once, as drained', async () => {
  const echo = await startTcpEcho();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-drain-'));
  after(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await echo.close();
  });
  const audit = path.join(dir, 'audit.log');
  const config = path.join(dir, 'oxy.yaml');
  fs.writeFileSync(
    config,
    [
      'endpoints:',
      '  main:',
      '    addr: 127.0.0.1:0',
      '  pump:',
      '    protocol: tcp',
      '    addr: 127.0.0.1:0',
      '    tunnel_splice: false',
      `    tcp: { target: "${echo.authority}" }`,
      '  spliced:',
      '    protocol: tcp',
      '    addr: 127.0.0.1:0',
      `    tcp: { target: "${echo.authority}" }`,
      'egress:',
      '  blocked_cidrs: []',
      'telemetry:',
      '  server:',
      '    enabled: false',
      'restart:',
      `  socket: ${path.join(dir, 'restart.sock')}`,
      '  drain_timeout: 1s',
      'audit:',
      '  output: file',
      `  path: ${audit}`,
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  after(() => child.kill('SIGKILL'));
  let log = '';
  const addrs = new Map<string, string>();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${log}`)), 15_000);
    const onLog = (d: Buffer): void => {
      log += d.toString();
      for (const m of log.matchAll(/endpoint listening endpoint=(\w+) addr=(\S+)/g))
        addrs.set(m[1] as string, m[2] as string);
      if (/ready/.test(log) && addrs.size === 3) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onLog);
    child.stderr.on('data', onLog);
  });
  const held: net.Socket[] = [];
  for (const name of ['pump', 'spliced']) {
    const s = dial(addrs.get(name) as string);
    s.write('held');
    assert.equal((await readBytes(s, 4)).toString(), 'held');
    held.push(s);
  }
  const c = dial(addrs.get('main') as string);
  c.write(`CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\nheld`);
  const answer = 'HTTP/1.1 200 Connection Established\r\n\r\nheld';
  assert.equal((await readBytes(c, answer.length)).toString(), answer);
  held.push(c);
  // The spliced tunnel must outlive the addon's 50 ms announcement too.
  await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number];
  assert.equal(code, 0, log);
  for (const s of held) s.destroy();
  const records = fs
    .readFileSync(audit, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; endpoint: string; close_reason: string });
  const tunnels = records.filter((r) => r.kind === 'tunnel');
  assert.deepEqual(tunnels.map((r) => r.endpoint).sort(), ['main', 'pump', 'spliced']);
  for (const r of tunnels) assert.equal(r.close_reason, 'drained', JSON.stringify(r));
});
