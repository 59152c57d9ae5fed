/**
 * `endpoints.<name>.tcp_congestion_control`: the endpoint's accepted connections use the named
 * algorithm (read back with `ss`, iproute2: the kernel's own view of each socket), on an `http`
 * and on a `tcp` endpoint; a name the kernel refuses stops the start with an error naming the
 * key. `reno` is built into every Linux kernel, so the test needs no module.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { type AppUnderTest, hooksApp, startApp } from '../src/testing/index.ts';

const apps: AppUnderTest[] = [];
/** The `tcp` endpoint's target: accepts and holds each connection. */
const held: net.Socket[] = [];
const target = net.createServer((s) => held.push(s));
target.listen(0, '127.0.0.1');
await once(target, 'listening');
const targetPort = (target.address() as net.AddressInfo).port;
after(async () => {
  await Promise.all(apps.map((a) => a.stop()));
  for (const s of held) s.destroy();
  target.close();
});

/** The congestion control of the server side of each established connection to `port`. */
function algorithmsAt(port: number): string[] {
  const out = execFileSync('ss', ['-tinH', 'state', 'established', `( sport = :${port} )`], {
    encoding: 'utf8',
  });
  const names = ['reno', 'cubic', 'bbr', 'htcp', 'vegas', 'westwood', 'dctcp'];
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((w) => names.includes(w));
}

async function connectedAlgorithm(address: string): Promise<string[]> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(':')),
    Number(address.slice(address.lastIndexOf(':') + 1)),
  ];
  const socket = net.connect(port, host);
  await once(socket, 'connect');
  // The server side is established once accepted; give the accept a moment.
  for (let i = 0; i < 50; i++) {
    const found = algorithmsAt(port);
    if (found.length > 0) {
      socket.destroy();
      return found;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  socket.destroy();
  return [];
}

test('accepted connections of an http and a tcp endpoint use the configured algorithm', async () => {
  const app = await startApp(hooksApp({}), {
    settings: {
      endpoints: {
        main: { tcp_congestion_control: 'reno' },
        raw: { protocol: 'tcp', tcp: { target: `127.0.0.1:${targetPort}` }, tcp_congestion_control: 'reno' },
        plain: {},
      },
    },
  });
  apps.push(app);
  assert.deepEqual(await connectedAlgorithm(app.address('main')), ['reno']);
  assert.deepEqual(await connectedAlgorithm(app.address('raw')), ['reno']);
  // Unset: the system default, whatever it is, and not forced to reno by the others.
  const system = execFileSync('sysctl', ['-n', 'net.ipv4.tcp_congestion_control'], {
    encoding: 'utf8',
  }).trim();
  assert.deepEqual(await connectedAlgorithm(app.address('plain')), [system]);
});

test('an algorithm the kernel lacks stops the start, naming the key', async () => {
  await assert.rejects(
    startApp(hooksApp({}), { settings: { endpoints: { main: { tcp_congestion_control: 'no-such-cc' } } } }),
    /endpoints\.main\.tcp_congestion_control: the kernel refused "no-such-cc" .*ENOENT/,
  );
});
