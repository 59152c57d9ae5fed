/**
 * A burst of replies from a UDP upstream while the event loop is busy must wait in the session's
 * upstream socket, not be dropped there: a client that sends datagrams as fast as Python sends
 * them, through a `udp` endpoint to an echo, lost half of 10,000 replies on a loaded machine,
 * all of them in the upstream socket's receive buffer (the kernel's 208 KiB default; the
 * endpoint's own socket has 4 MiB), while the same client talking to the echo directly lost
 * none. Here the upstream (a Python process, so that the burst is sent while this process is
 * busy) answers one datagram with 3,000, and a datagram hook holds the event loop for 300 ms
 * on the first reply, as a stall on a loaded machine would.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { DatagramVerdict } from '../src/hooks/datagram.ts';
import { type AppUnderTest, hooksApp, startApp } from '../src/testing/index.ts';

const BURST = 3000;
const PEER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(2048)
    for i in range(${BURST}):
        s.sendto(i.to_bytes(4, 'big') + b'r' * 60, a)
`;

let peer: ChildProcess | null = null;
let oxy: AppUnderTest | null = null;
after(async () => {
  peer?.kill();
  await oxy?.stop();
});

test('replies that arrive while the event loop is held are all delivered', async (t) => {
  peer = spawn('python3', ['-c', PEER], { stdio: ['ignore', 'pipe', 'inherit'] });
  const spawned = await Promise.race([
    once(peer.stdout as NodeJS.ReadableStream, 'data').then(([d]) => String(d)),
    once(peer, 'error').then(() => null),
  ]);
  if (spawned === null) {
    t.skip('python3 is not installed');
    return;
  }
  const peerPort = Number(spawned.trim());
  let held = false;
  oxy = await startApp(
    hooksApp({
      datagram: {
        handleDatagram(_data, direction) {
          if (direction === 'down' && !held) {
            held = true;
            const until = performance.now() + 300;
            while (performance.now() < until); // the stall: the burst arrives meanwhile
          }
          return DatagramVerdict.pass();
        },
      },
    }),
    {
      settings: {
        egress: { blocked_cidrs: [] },
        endpoints: {
          main: {},
          dgram: { protocol: 'udp', addr: '127.0.0.1:0', udp: { target: `127.0.0.1:${peerPort}` } },
        },
      },
    },
  );
  const port = Number(oxy.address('dgram').split(':').at(-1));
  const client = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  const seen = new Set<number>();
  client.on('message', (m) => seen.add(m.readUInt32BE(0)));
  client.send('go', port, '127.0.0.1');
  const deadline = performance.now() + 10_000;
  let last = -1;
  // Until every reply came, or nothing more came for a second.
  while (seen.size < BURST && performance.now() < deadline) {
    const before = seen.size;
    await new Promise((r) => setTimeout(r, 1000));
    if (seen.size === before && before === last) break;
    last = seen.size;
  }
  client.close();
  assert.ok(held, 'the hook held the loop');
  assert.equal(seen.size, BURST, `${BURST - seen.size} of ${BURST} replies lost`);
});
