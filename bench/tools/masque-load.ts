/**
 * The load generator of S11: the closed loop of S7b (1,200 B datagrams to the UDP echo upstream
 * and straight back) carried by CONNECT-UDP over HTTP/2 (`oxy/masque`, one h2c connection),
 * through `streams` tunnels sharing the window, in a process of its own so the harness measures
 * nothing.
 *
 *   node bench/tools/masque-load.ts --proxy http://H:P --target H:P [--streams 1] [--size 1200]
 *     [--window 256] [--seconds 5] [--pid N]
 *
 * Each tunnel keeps `ceil(window / streams)` datagrams circulating; each one that comes back is
 * sent again on the same tunnel. If the loop dies out (datagrams lost: the proxy drops when a
 * queue is full) it is restarted and the restart counted. With `--pid`, the CPU time of that
 * process over the measured window is reported, split by thread; the loop and its figures are
 * udp-load.ts's (`bench/lib/closed-loop.ts`). Prints one JSON line.
 */
import { parseArgs } from 'node:util';
import { createMasqueClient, type UdpTunnel } from 'oxy/masque';
import { CLOSED_LOOP_OPTIONS, runClosedLoop } from '../lib/closed-loop.ts';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string' },
    target: { type: 'string' },
    streams: { type: 'string', default: '1' },
    size: { type: 'string', default: '1200' },
    ...CLOSED_LOOP_OPTIONS,
  },
});
if (!values.proxy || !values.target) throw new Error('--proxy and --target are required');
const [host = '127.0.0.1', portText = ''] = values.target.split(':');
const streams = Number(values.streams);
const each = Math.max(1, Math.ceil(Number(values.window) / streams));
const payload = Buffer.alloc(Number(values.size), 0x61);

const client = createMasqueClient({ proxy: values.proxy, connectTimeoutMs: 30_000 });
const tunnels: UdpTunnel[] = [];
for (let i = 0; i < streams; i += 20) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(20, streams - i) }, () => client.connectUdp(host, Number(portText))),
  );
  tunnels.push(...batch);
}
let received = 0;
for (const t of tunnels) {
  t.on('datagram', (d) => {
    received++;
    t.send(d);
  });
  t.on('error', () => {});
}
const result = await runClosedLoop({
  kick() {
    for (const t of tunnels) for (let i = 0; i < each; i++) t.send(payload);
  },
  received: () => received,
  args: values,
});
process.stdout.write(`${JSON.stringify({ mode: 'masque-h2', streams, size: payload.length, ...result })}\n`);
await Promise.race([client.close(), new Promise((r) => setTimeout(r, 2000))]);
process.exit(0);
