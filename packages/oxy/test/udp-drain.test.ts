/**
 * A `udp` endpoint on SIGTERM: with no next process to read its socket, it reads on for the
 * sessions still open, so their clients keep being carried both ways until they stop (the
 * session idles out) or the drain ends; a new client is turned away. It once stopped reading at
 * once, cutting every open session off from its client while it waited for it to idle out.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { startUdpEcho } from './fixtures/udp-echo.ts';

const bin = new URL('../bin/oxy', import.meta.url).pathname;

/** The next datagram `s` receives, or null after `ms`. */
function nextMessage(s: dgram.Socket, ms: number): Promise<string | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.off('message', on);
      resolve(null);
    }, ms);
    const on = (m: Buffer): void => {
      clearTimeout(timer);
      resolve(m.toString());
    };
    s.once('message', on);
  });
}

test('on SIGTERM a udp endpoint carries its open sessions on until they idle out, and turns new clients away', async () => {
  const echo = await startUdpEcho();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-udp-drain-'));
  const clients: dgram.Socket[] = [];
  after(() => {
    echo.close();
    for (const c of clients) c.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const audit = path.join(dir, 'audit.log');
  const config = path.join(dir, 'oxy.yaml');
  fs.writeFileSync(
    config,
    [
      'endpoints:',
      '  dgram:',
      '    protocol: udp',
      '    addr: 127.0.0.1:0',
      `    udp: { target: "${echo.authority}", idle_timeout: 700ms }`,
      'egress:',
      '  blocked_cidrs: []',
      'telemetry:',
      '  server:',
      '    enabled: false',
      'restart:',
      `  socket: ${path.join(dir, 'restart.sock')}`,
      '  drain_timeout: 20s',
      'audit:',
      '  output: file',
      `  path: ${audit}`,
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  after(() => child.kill('SIGKILL'));
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d));
  child.stderr.on('data', (d: Buffer) => (log += d));
  const started = Date.now();
  while (!/ready/.test(log) || !/endpoint listening/.test(log)) {
    assert.ok(Date.now() - started < 15_000, `not ready: ${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const port = Number(/endpoint listening endpoint=dgram addr=\S+:(\d+)/.exec(log)?.[1]);
  const client = (): dgram.Socket => {
    const c = dgram.createSocket('udp4');
    clients.push(c);
    return c;
  };

  const open = client();
  open.send('0', port, '127.0.0.1');
  assert.equal(await nextMessage(open, 2000), '0');
  child.kill('SIGTERM');
  while (!/shutting down gracefully/.test(log)) await new Promise((r) => setTimeout(r, 10));

  // The open session is carried on, well past its idle timeout, while its client speaks.
  let sent = 1;
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    const text = String(sent++);
    open.send(text, port, '127.0.0.1');
    assert.equal(await nextMessage(open, 1000), text, `datagram ${text} during the drain`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // A client that had no session gets none.
  const late = client();
  late.send('late', port, '127.0.0.1');
  assert.equal(await nextMessage(late, 500), null);
  assert.ok(child.exitCode === null, 'the drain waits for the open session');

  // Once its client stops, the session idles out and the process exits long before the deadline.
  const stopped = Date.now();
  const [code] = (await once(child, 'exit')) as [number];
  assert.equal(code, 0, log);
  assert.ok(Date.now() - stopped < 5000, `exited ${Date.now() - stopped} ms after the client stopped`);
  const records = fs
    .readFileSync(audit, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((r) => r.kind === 'udp_session');
  assert.equal(records.length, 1, JSON.stringify(records));
  assert.equal(records[0].close_reason, 'idle_timeout');
  assert.equal(records[0].datagrams_up, sent);
  assert.equal(records[0].datagrams_down, sent);
});
