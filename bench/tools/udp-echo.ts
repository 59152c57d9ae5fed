/**
 * Micro-benchmark of the addon's UdpSocket against node:dgram: datagrams per second through a
 * UDP echo server, and the server's CPU time per datagram (process.cpuUsage), for 64 B and
 * 1,200 B datagrams. Run on demand, not in `npm test`:
 *
 *   node bench/tools/udp-echo.ts [--seconds 5] [--window 256] [--sizes 64,1200] [--servers native,dgram]
 *
 * The server runs in a child process (`--serve native|dgram`), so it has a core of its own on a
 * 2-vCPU machine. The load generator is the same for both servers: a native UdpSocket that
 * starts `window` datagrams and sends every reply straight back (sendmmsg of the received
 * batch), so a fixed number circulate; if the ring dies out (datagrams lost to full buffers)
 * it is restarted. Prints one JSON line per run and a table.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UdpSocket } from 'native';

const { values } = parseArgs({
  options: {
    serve: { type: 'string' },
    seconds: { type: 'string', default: '5' },
    window: { type: 'string', default: '256' },
    sizes: { type: 'string', default: '64,1200' },
    servers: { type: 'string', default: 'native,dgram' },
  },
});

/** Ctx switches of this process so far, from /proc (voluntary + involuntary). */
function contextSwitches(): number {
  try {
    const text = readFileSync('/proc/self/status', 'utf8');
    let n = 0;
    for (const m of text.matchAll(/ctxt_switches:\s+(\d+)/g)) n += Number(m[1]);
    return n;
  } catch {
    return 0; // Named boundary: not Linux, or /proc hidden; the figure is then left out.
  }
}

/** The echo server: prints its port, then on each "mark" line prints its counters since the last one. */
function serve(kind: string): void {
  let datagrams = 0;
  let batches = 0; // receive callbacks: one per batch (native) or per datagram (dgram)
  let port: number;
  if (kind === 'native') {
    const s = UdpSocket.bind({ address: '127.0.0.1', receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    s.onBatch((b) => {
      datagrams += b.count;
      batches++;
      s.sendBatch(b);
    });
    port = s.address().port;
  } else {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    s.on('message', (m, r) => {
      datagrams++;
      batches++;
      s.send(m, r.port, r.address);
    });
    s.bind(0, '127.0.0.1');
    s.on('listening', () => process.stdout.write(`${JSON.stringify({ port: s.address().port })}\n`));
    port = -1;
  }
  if (port >= 0) process.stdout.write(`${JSON.stringify({ port })}\n`);
  let cpu = process.cpuUsage();
  let cs = contextSwitches();
  let n0 = 0;
  let b0 = 0;
  const lines = createInterface({ input: process.stdin });
  lines.on('line', () => {
    const used = process.cpuUsage(cpu);
    const now = contextSwitches();
    process.stdout.write(
      `${JSON.stringify({ datagrams: datagrams - n0, batches: batches - b0, cpuUs: used.user + used.system, ctxSwitches: now - cs })}\n`,
    );
    cpu = process.cpuUsage();
    cs = now;
    n0 = datagrams;
    b0 = batches;
  });
  lines.on('close', () => process.exit(0));
}

interface Result {
  server: string;
  size: number;
  datagramsPerSecond: number;
  serverCpuUsPerDatagram: number;
  serverCpuShare: number;
  serverCtxSwitchesPer1kDatagrams: number;
  serverMeanBatch: number;
  clientCpuShare: number;
  restarts: number;
  loadAverage: number;
}

async function run(kind: string, size: number, seconds: number, window: number): Promise<Result> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', kind], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const next = (): Promise<Record<string, number>> =>
    once(lines, 'line').then(([l]) => JSON.parse(l as string) as Record<string, number>);
  const { port } = await next();
  const client = UdpSocket.bind({
    address: '127.0.0.1',
    receiveBufferSize: 4 << 20,
    sendBufferSize: 4 << 20,
  });
  let received = 0;
  client.onBatch((b) => {
    received += b.count;
    client.sendBatch(b);
  });
  const payload = Buffer.alloc(size, 0x61);
  const start = (): void => {
    const burst = Array.from({ length: window }, () => ({
      data: payload,
      address: '127.0.0.1',
      port: port!,
    }));
    for (let i = 0; i < burst.length; i += 64) client.sendBatch(burst.slice(i, i + 64));
  };
  start();
  let restarts = 0;
  let seen = 0;
  const watchdog = setInterval(() => {
    if (received === seen) {
      restarts++;
      start();
    }
    seen = received;
  }, 100);
  await new Promise((r) => setTimeout(r, 500)); // warm-up
  child.stdin!.write('mark\n');
  await next();
  const r0 = received;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  restarts = 0;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  child.stdin!.write('mark\n');
  const srv = await next();
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const got = received - r0;
  const clientCpu = process.cpuUsage(c0);
  clearInterval(watchdog);
  client.close();
  child.stdin!.end();
  await once(child, 'exit');
  return {
    server: kind,
    size,
    datagramsPerSecond: Math.round(got / elapsed),
    serverCpuUsPerDatagram: Number(((srv.cpuUs ?? 0) / Math.max(1, srv.datagrams ?? 0)).toFixed(3)),
    serverCpuShare: Number(((srv.cpuUs ?? 0) / 1e6 / elapsed).toFixed(2)),
    serverCtxSwitchesPer1kDatagrams: Number(
      (((srv.ctxSwitches ?? 0) * 1000) / Math.max(1, srv.datagrams ?? 0)).toFixed(2),
    ),
    serverMeanBatch: Number(((srv.datagrams ?? 0) / Math.max(1, srv.batches ?? 0)).toFixed(1)),
    clientCpuShare: Number(((clientCpu.user + clientCpu.system) / 1e6 / elapsed).toFixed(2)),
    restarts,
    loadAverage: Number(loadavg()[0]?.toFixed(1)),
  };
}

if (values.serve) {
  serve(values.serve);
} else {
  const results: Result[] = [];
  for (const size of values.sizes.split(',').map(Number)) {
    for (const kind of values.servers.split(',')) {
      const r = await run(kind, size, Number(values.seconds), Number(values.window));
      process.stdout.write(`${JSON.stringify(r)}\n`);
      results.push(r);
    }
  }
  console.table(results);
}
