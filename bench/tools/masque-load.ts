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
 * process over the measured window is reported, split as udp-load.ts does. Prints one JSON line.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createMasqueClient, type UdpTunnel } from 'oxy/masque';
import { cpuSplit, cpuSplitSince } from '../lib/threads.ts';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string' },
    target: { type: 'string' },
    streams: { type: 'string', default: '1' },
    size: { type: 'string', default: '1200' },
    window: { type: 'string', default: '256' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '0.7' },
    pid: { type: 'string' },
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
function kick(): void {
  for (const t of tunnels) for (let i = 0; i < each; i++) t.send(payload);
}
kick();
let seen = 0;
let restarts = 0;
const watchdog = setInterval(() => {
  if (received === seen) {
    restarts++;
    kick();
  }
  seen = received;
}, 100);
await new Promise((r) => setTimeout(r, Number(values.warmup) * 1000));
const pid = values.pid ? Number(values.pid) : null;
const cpu0 = pid ? cpuSplit(pid) : null;
const r0 = received;
restarts = 0;
const t0 = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, Number(values.seconds) * 1000));
const got = received - r0;
const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = pid && cpu0 ? cpuSplitSince(pid, cpu0) : null;
clearInterval(watchdog);
process.stdout.write(
  `${JSON.stringify({
    mode: 'masque-h2',
    streams,
    size: payload.length,
    round_trips: got,
    round_trips_per_s: got / elapsed,
    bad: 0,
    restarts,
    seconds: elapsed,
    load_average: loadavg()[0],
    ...(cpu
      ? { cpu_s: cpu.total, cpu_js_s: cpu.js, cpu_reactor_s: cpu.reactor, cpu_other_s: cpu.other }
      : {}),
  })}\n`,
);
await Promise.race([client.close(), new Promise((r) => setTimeout(r, 2000))]);
process.exit(0);
