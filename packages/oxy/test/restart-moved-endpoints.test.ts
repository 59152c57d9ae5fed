/**
 * A restart is how a new config is applied, addresses included. With real processes: a
 * restart that moves a `udp` and a `tcp` endpoint to new ports serves them there (the handed-
 * over sockets no longer fit and are closed, so their old ports are free once the old process
 * has drained), while an endpoint at port 0 keeps the port the kernel gave it; a restart that
 * removes endpoints closes their sockets, so clients are refused instead of left hanging.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServiceUnderTest, waitExit } from '../../foundations/test/fixtures/restart-harness.ts';
import { freePort } from './fixtures/l4-peers.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

/** A free UDP port on 127.0.0.1 (closed again: the service binds it next). */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

/**
 * True when nothing holds UDP port `port` on 127.0.0.1 within 3 s: we can bind it ourselves. (A
 * process closes an adopted socket on its reactor thread, a moment after it says so.)
 */
async function udpPortFree(port: number): Promise<boolean> {
  for (let i = 0; i < 30; i++) {
    if (await udpPortFreeNow(port)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function udpPortFreeNow(port: number): Promise<boolean> {
  const s = dgram.createSocket('udp4');
  try {
    s.bind(port, '127.0.0.1');
    await once(s, 'listening');
    return true;
  } catch {
    return false; // boundary: EADDRINUSE is the answer asked for
  } finally {
    s.close();
  }
}

/** One datagram to `port` and its echo back, through the `udp` endpoint. */
async function udpRoundTrip(port: number, text: string): Promise<string> {
  const c = dgram.createSocket('udp4');
  try {
    c.bind(0, '127.0.0.1');
    await once(c, 'listening');
    const answer = once(c, 'message', { signal: AbortSignal.timeout(5000) });
    c.send(text, port, '127.0.0.1');
    const [msg] = (await answer) as [Buffer];
    return msg.toString();
  } finally {
    c.close();
  }
}

/** Connects to `port`, sends `text` and reads its echo through the `tcp` endpoint. */
async function tcpRoundTrip(port: number, text: string): Promise<string> {
  const c = net.connect(port, '127.0.0.1');
  try {
    await once(c, 'connect');
    c.end(text);
    let got = '';
    for await (const chunk of c) got += String(chunk);
    return got;
  } finally {
    c.destroy();
  }
}

/** How a connection to `port` ends: `refused`, or `accepted` (something listens). */
async function connectOutcome(port: number): Promise<'refused' | 'accepted'> {
  const c = net.connect(port, '127.0.0.1');
  try {
    await once(c, 'connect');
    return 'accepted';
  } catch (e) {
    assert.equal((e as NodeJS.ErrnoException).code, 'ECONNREFUSED');
    return 'refused';
  } finally {
    c.destroy();
  }
}

/** The port of the newest "endpoint listening" line for `name`. */
function loggedPort(svc: ServiceUnderTest, name: string): number {
  const re = new RegExp(`endpoint listening endpoint=${name} addr=127\\.0\\.0\\.1:(\\d+)`, 'g');
  const all = [...(svc.stdoutText + svc.stderr).matchAll(re)];
  const last = all.at(-1);
  if (last === undefined) throw new Error(`no address logged for ${name}:\n${svc.stdoutText}${svc.stderr}`);
  return Number(last[1]);
}

describe('oxy --restart with moved and removed endpoints', () => {
  const udpEcho = dgram.createSocket('udp4');
  const tcpEcho = net.createServer((s) => s.pipe(s));
  const services: ServiceUnderTest[] = [];
  let svc: ServiceUnderTest;
  before(async () => {
    udpEcho.on('message', (m, from) => udpEcho.send(m, from.port, from.address));
    udpEcho.bind(0, '127.0.0.1');
    await once(udpEcho, 'listening');
    tcpEcho.listen(0, '127.0.0.1');
    await once(tcpEcho, 'listening');
  });
  after(() => {
    for (const s of services) s.cleanup();
    udpEcho.close();
    tcpEcho.close();
  });

  /** The config with each endpoint at its port; a null port leaves the endpoint out. */
  const config = (sock: string, ports: { echo: number | null; raw: number | null }): string =>
    [
      'endpoints:',
      ...(ports.echo === null
        ? []
        : [
            '  echo:',
            '    protocol: udp',
            `    addr: "127.0.0.1:${ports.echo}"`,
            '    udp:',
            `      target: "127.0.0.1:${udpEcho.address().port}"`,
            '      idle_timeout: 1s',
          ]),
      ...(ports.raw === null
        ? []
        : [
            '  raw:',
            '    protocol: tcp',
            `    addr: "127.0.0.1:${ports.raw}"`,
            '    tcp:',
            `      target: "127.0.0.1:${(tcpEcho.address() as net.AddressInfo).port}"`,
          ]),
      '  stay:',
      '    addr: 127.0.0.1:0',
      'egress:',
      '  blocked_cidrs: []', // the echo servers live on loopback
      'restart:',
      `  socket: ${sock}`,
      '  drain_timeout: 1s',
      'telemetry:',
      '  server:',
      '    enabled: false',
      '',
    ].join('\n');

  it('a changed addr moves udp and tcp endpoints; port 0 keeps its port; old ports are freed', async () => {
    const before = { echo: await freeUdpPort(), raw: await freePort() };
    svc = new ServiceUnderTest((sock) => config(sock, before), APP);
    services.push(svc);
    const first = await svc.start();
    for (let i = 0; i < 100 && !/endpoint=stay/.test(svc.stdoutText + svc.stderr); i++) await sleep(50);
    const stay = loggedPort(svc, 'stay');
    assert.equal(await udpRoundTrip(before.echo, 'udp before'), 'udp before');
    assert.equal(await tcpRoundTrip(before.raw, 'tcp before'), 'tcp before');

    const moved = { echo: await freeUdpPort(), raw: await freePort() };
    svc.writeConfig(config(svc.socket, moved));
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await svc.waitGeneration(2);
    assert.equal(await udpRoundTrip(moved.echo, 'udp moved'), 'udp moved');
    assert.equal(await tcpRoundTrip(moved.raw, 'tcp moved'), 'tcp moved');
    assert.equal(loggedPort(svc, 'echo'), moved.echo);
    assert.equal(loggedPort(svc, 'raw'), moved.raw);
    assert.equal(loggedPort(svc, 'stay'), stay, 'addr 127.0.0.1:0 keeps the inherited port');
    assert.match(svc.stdoutText + svc.stderr, /inherited socket matches no endpoint; closed name=raw/);
    assert.match(svc.stdoutText + svc.stderr, /inherited UDP socket matches no endpoint; closed name=echo/);

    assert.ok(await waitExit(first.pid, 10_000), 'the old process drained and exited');
    assert.equal(await connectOutcome(before.raw), 'refused', 'the old tcp port is closed');
    assert.ok(await udpPortFree(before.echo), 'the old udp port is closed');
    assert.equal(await connectOutcome(stay), 'accepted');
  });

  it('a removed endpoint is closed: clients are refused, not left hanging', async () => {
    const second = svc.current;
    const moved = { echo: loggedPort(svc, 'echo'), raw: loggedPort(svc, 'raw') };
    svc.writeConfig(config(svc.socket, { echo: null, raw: null }));
    const r = await svc.restart();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await svc.waitGeneration(3);
    assert.ok(await waitExit(second.pid, 10_000), 'the old process drained and exited');
    assert.equal(await connectOutcome(moved.raw), 'refused');
    assert.ok(await udpPortFree(moved.echo));
    assert.equal(await connectOutcome(loggedPort(svc, 'stay')), 'accepted');
  });
});
