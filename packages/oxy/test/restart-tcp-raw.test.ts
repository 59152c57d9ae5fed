/**
 * A graceful restart of a `tcp` endpoint that accepts raw (`onramps/tcp/raw-accept.ts`: no hook
 * needs the socket): the listening socket is handed over, so the new process serves new
 * connections on the same port at once, while the old one keeps its raw tunnel until
 * `drain_timeout` and then ends it and exits.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, ServiceUnderTest, waitExit } from '../../foundations/test/fixtures/restart-harness.ts';
import { proxyPort } from './fixtures/proxied.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');
const echo = net.createServer((s) => s.pipe(s));
let echoPort = 0;
const services: ServiceUnderTest[] = [];
before(async () => {
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
});
after(() => {
  for (const s of services) s.cleanup();
  echo.close();
});

const config = (sock: string): string =>
  [
    'endpoints:',
    '  raw:',
    '    protocol: tcp',
    '    addr: 127.0.0.1:0',
    '    tcp:',
    `      target: 127.0.0.1:${echoPort}`,
    'egress:',
    '  blocked_cidrs: []', // the echo server lives on loopback
    'restart:',
    `  socket: ${sock}`,
    '  drain_timeout: 2s',
    'telemetry:',
    '  server:',
    '    enabled: false',
    '',
  ].join('\n');

/** A client of the endpoint whose echoed bytes are collected. */
async function client(port: number): Promise<{ socket: net.Socket; roundTrip(text: string): Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  let received = '';
  socket.setEncoding('utf8').on('data', (d: string) => {
    received += d;
  });
  return {
    socket,
    async roundTrip(text: string) {
      socket.write(text);
      for (let i = 0; i < 200 && !received.endsWith(text); i++) await sleep(10);
      assert.ok(received.endsWith(text), `echo of ${text} missing`);
    },
  };
}

test('a raw-accepting tcp endpoint restarts: same port, old tunnel kept until drain_timeout', async () => {
  const svc = new ServiceUnderTest(config, APP);
  services.push(svc);
  const first = await svc.start();
  const port = await proxyPort(svc);
  const old = await client(port);
  const closed = new Promise<number>((resolve) => old.socket.on('close', () => resolve(Date.now())));
  await old.roundTrip('before;');
  const r = await svc.restart();
  assert.equal(r.code, 0, r.stderr);
  const restartedAt = Date.now();
  const second = await svc.waitGeneration(2);
  const fresh = await client(port);
  await fresh.roundTrip('new process;');
  await old.roundTrip('old process, draining;');
  const lived = (await closed) - restartedAt;
  assert.ok(lived >= 1500 && lived < 5000, `tunnel closed ${lived} ms after the restart (drain_timeout 2s)`);
  assert.ok(await waitExit(first.pid, 3000), 'old process exited');
  assert.ok(isAlive(second.pid));
  await fresh.roundTrip('still served;');
  fresh.socket.destroy();
});
