/**
 * What a drain cuts is recorded, as `drained`: the `oxy` command in a child process with a `tcp`
 * endpoint carried by the JS pump (`tunnel_splice: false`), a spliced one (the addon's accept),
 * a CONNECT tunnel and a `udp` session, each held open; SIGTERM, then either the
 * `restart.drain_timeout` deadline or a second SIGTERM cuts them, with `workers: 2` too (the
 * supervisor passes the cut on). Every unit gets its one audit record (the pump's once came
 * after the audit file closed, and a second signal exited before any was written, with workers
 * too: the supervisor's exit killed them), and its close reason says the proxy cut it, not that
 * the client reset it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { readBytes, startTcpEcho } from '../src/testing/index.ts';
import { startUdpEcho } from './fixtures/udp-echo.ts';

const bin = new URL('../bin/oxy', import.meta.url).pathname;

function dial(addr: string): net.Socket {
  const i = addr.lastIndexOf(':');
  const s = net.connect(Number(addr.slice(i + 1)), addr.slice(0, i));
  s.on('error', () => {});
  return s;
}

/** `oxy` with one unit of each kind open: its process, its log and its audit records. */
interface Held {
  readonly child: ChildProcess;
  /** The endpoints holding a unit, sorted. */
  readonly units: readonly string[];
  log(): string;
  records(): { kind: string; endpoint: string; close_reason: string }[];
}

async function holdUnits(drainTimeout: string, workers = 1): Promise<Held> {
  // A udp endpoint runs in one process only.
  const udp = workers === 1;
  const echo = await startTcpEcho();
  const udpEcho = await startUdpEcho();
  after(() => udpEcho.close());
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
      ...(udp
        ? [
            '  dgram:',
            '    protocol: udp',
            '    addr: 127.0.0.1:0',
            `    udp: { target: "${udpEcho.authority}" }`,
          ]
        : []),
      'egress:',
      '  blocked_cidrs: []',
      'telemetry:',
      '  server:',
      '    enabled: false',
      'restart:',
      `  socket: ${path.join(dir, 'restart.sock')}`,
      `  drain_timeout: ${drainTimeout}`,
      'audit:',
      '  output: file',
      `  path: ${audit}`,
      `workers: ${workers}`,
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
      if (/ready/.test(log) && addrs.size === (udp ? 4 : 3)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onLog);
    child.stderr.on('data', onLog);
  });
  const held: { destroy(): void }[] = [];
  after(() => {
    for (const s of held) s.destroy();
  });
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
  if (udp) {
    const port = Number((addrs.get('dgram') as string).split(':').at(-1));
    const u = dgram.createSocket('udp4');
    u.send('held', port, '127.0.0.1');
    assert.equal(String((await once(u, 'message'))[0]), 'held');
    held.push({ destroy: () => u.close() });
  }
  // The spliced tunnel must outlive the addon's 50 ms announcement too.
  await new Promise((r) => setTimeout(r, 100));
  return {
    child,
    units: udp ? ['dgram', 'main', 'pump', 'spliced'] : ['main', 'pump', 'spliced'],
    log: () => log,
    records: () =>
      fs
        .readFileSync(audit, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
  };
}

/** Each unit recorded once, as drained. */
function assertAllDrained(held: Held): void {
  const units = held.records().filter((r) => r.kind === 'tunnel' || r.kind === 'udp_session');
  assert.deepEqual(units.map((r) => r.endpoint).sort(), held.units);
  for (const r of units) assert.equal(r.close_reason, 'drained', JSON.stringify(r));
}

test('units cut at the drain deadline are each recorded once, as drained', async () => {
  const held = await holdUnits('1s');
  held.child.kill('SIGTERM');
  const [code] = (await once(held.child, 'exit')) as [number];
  assert.equal(code, 0, held.log());
  assertAllDrained(held);
});

test('a second SIGTERM cuts the drain short, and still records each unit as drained', async () => {
  const held = await holdUnits('60s');
  held.child.kill('SIGTERM');
  while (!/shutting down gracefully/.test(held.log())) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(held.child.exitCode, null, 'still draining the units');
  const started = Date.now();
  held.child.kill('SIGTERM');
  const [code] = (await once(held.child, 'exit')) as [number];
  assert.equal(code, 128 + 15, held.log());
  assert.ok(Date.now() - started < 10_000, 'cut short, not at the 60 s deadline');
  assert.match(held.log(), /second SIGTERM: cutting the drain short/);
  assertAllDrained(held);
});

test("with workers, a second SIGTERM to the supervisor cuts the workers' drains short, and each unit is still recorded", async () => {
  const held = await holdUnits('60s', 2);
  held.child.kill('SIGTERM');
  while (!/shutting down gracefully/.test(held.log())) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(held.child.exitCode, null, 'still draining the units');
  const started = Date.now();
  held.child.kill('SIGTERM'); // the supervisor only: its workers hear it from the supervisor
  const [code] = (await once(held.child, 'exit')) as [number];
  assert.equal(code, 128 + 15, held.log());
  assert.ok(Date.now() - started < 10_000, 'cut short, not at the 60 s deadline');
  assertAllDrained(held);
});
