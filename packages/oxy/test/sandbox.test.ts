/**
 * The Oxy app under the syscall sandbox (`security.syscall_sandboxing`), with real processes on
 * the real kernel: every thread runs the filter, proxying keeps working (absolute-form and
 * CONNECT), and a graceful restart under the sandbox hands over to a new, sandboxed process.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, ServiceUnderTest, waitExit } from '../../foundations/test/fixtures/restart-harness.ts';
import { connectTunnel, proxyRequest, readBytes } from '../src/testing/clients.ts';
import { type HttpUpstream, startHttpUpstream, startTcpEcho, type TcpPeer } from '../src/testing/peers.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

const config = (sock: string): string =>
  [
    'endpoints:',
    '  main:',
    '    addr: 127.0.0.1:0',
    'egress:',
    '  blocked_cidrs: []',
    'restart:',
    `  socket: ${sock}`,
    '  drain_timeout: 2s',
    'telemetry:',
    '  server:',
    '    enabled: false',
    'security:',
    '  syscall_sandboxing:',
    '    enabled: true',
    '    violation_action: kill_process',
    '',
  ].join('\n');

/** The `Seccomp:` mode of every thread of `pid` (2 = filter). */
function seccompModes(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    return Number(/^Seccomp:\s+(\d+)/m.exec(status)?.[1] ?? -1);
  });
}

async function proxyAddress(svc: ServiceUnderTest, after = 0): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const found = [
      ...(svc.stdoutText + svc.stderr).matchAll(/endpoint listening .*addr=(127\.0\.0\.1:\d+)/g),
    ];
    if (found.length > after) return found[after]![1]!;
    await sleep(50);
  }
  throw new Error(`oxy did not log its address:\n${svc.stdoutText}${svc.stderr}`);
}

describe('the Oxy app under the syscall sandbox', () => {
  let upstream: HttpUpstream;
  let echo: TcpPeer;
  const services: ServiceUnderTest[] = [];
  before(async () => {
    upstream = await startHttpUpstream({ '/': { body: 'origin ok' } });
    echo = await startTcpEcho();
  });
  after(async () => {
    for (const s of services) s.cleanup();
    await upstream.close();
    await echo.close();
  });

  it('proxies with every thread filtered, and restarts gracefully into a sandboxed process', async () => {
    const svc = new ServiceUnderTest(config, APP);
    services.push(svc);
    const first = await svc.start();
    const addr = await proxyAddress(svc);
    // The filter goes on after the endpoints listen and before the app reports ready.
    for (let i = 0; i < 200 && !/syscall sandbox on/.test(svc.stdoutText); i++) await sleep(50);
    assert.match(svc.stdoutText, /syscall sandbox on/);
    const modes = seccompModes(first.pid);
    assert.ok(modes.length > 3 && modes.every((m) => m === 2), `threads' seccomp modes: ${modes}`);

    // Absolute-form, DNS-free and DNS-using targets, and a CONNECT tunnel all work sandboxed.
    assert.equal((await proxyRequest(addr, `${upstream.origin}/`)).text, 'origin ok');
    assert.equal((await proxyRequest(addr, `http://localhost:${upstream.port}/`)).text, 'origin ok');
    const tunnel = await connectTunnel(addr, echo.authority);
    assert.equal(tunnel.status, 200);
    tunnel.socket.write('through the sandbox');
    assert.equal((await readBytes(tunnel.socket, 19)).toString(), 'through the sandbox');
    (tunnel.socket as net.Socket).destroy();

    const r = await svc.restart();
    assert.equal(r.code, 0, `restarter: ${r.stdout}${r.stderr}`);
    const second = await svc.waitGeneration(2);
    assert.notEqual(second.pid, first.pid);
    assert.equal(second.counter, 2, 'stateForRestart reached the sandboxed successor');
    assert.ok(await waitExit(first.pid, 10_000), 'the old process exits after draining');
    assert.ok(isAlive(second.pid));
    assert.ok(
      seccompModes(second.pid).every((m) => m === 2),
      'the new process is sandboxed too',
    );
    // Same listening socket, new process.
    const agent = new http.Agent({ keepAlive: false });
    assert.equal((await proxyRequest(addr, `${upstream.origin}/`, { agent })).text, 'origin ok');
    agent.destroy();
  });
});
