/**
 * An early look at S7: datagrams per second through a UDP relay built on the addon's
 * UdpSocket (one connected upstream socket per client, as a `udp` endpoint's sessions will
 * be) against nginx's stream module proxying UDP, and each relay's CPU time per datagram.
 * Run on demand, not in `npm test`:
 *
 *   node bench/tools/udp-relay.ts [--seconds 5] [--window 256] [--sizes 64,1200] [--clients 4]
 *
 * Three processes: the upstream (udp-echo.ts's native echo), the relay under test (this file
 * with `--relay`, or nginx with one worker process, no master), and the load generator (this
 * process: `clients` native sockets, each keeping `window / clients` datagrams circulating by
 * sending every reply straight back). The relay's CPU comes from /proc/<pid>/stat.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UdpSocket } from 'native';

const { values } = parseArgs({
  options: {
    relay: { type: 'string' }, // upstream port: run as the native relay
    seconds: { type: 'string', default: '5' },
    window: { type: 'string', default: '256' },
    sizes: { type: 'string', default: '64,1200' },
    clients: { type: 'string', default: '4' },
  },
});
const ECHO = fileURLToPath(new URL('./udp-echo.ts', import.meta.url));
const BUF = 4 << 20;

/** The native relay: sessions keyed by client, each with its own connected upstream socket. */
function relay(upstreamPort: number): void {
  const listen = UdpSocket.bind({ address: '127.0.0.1', receiveBufferSize: BUF, sendBufferSize: BUF });
  const sessions = new Map<number | string, UdpSocket>();
  listen.onBatch((b) => {
    for (let i = 0; i < b.count; i++) {
      const key = b.peerKey(i);
      let up = sessions.get(key);
      if (up === undefined) {
        const session = UdpSocket.connect({ address: '127.0.0.1', port: upstreamPort });
        const client = UdpSocket.target(b.address(i), b.port(i));
        session.onBatch((replies) => listen.sendBatch(replies, client));
        sessions.set(key, session);
        up = session;
      }
      up.sendFrom(b, i);
    }
  });
  process.stdout.write(`${JSON.stringify({ port: listen.address().port })}\n`);
}

function firstLine(child: ChildProcess): Promise<Record<string, number>> {
  const lines = createInterface({ input: child.stdout! });
  return once(lines, 'line').then(([l]) => JSON.parse(l as string) as Record<string, number>);
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ, 100 on Linux
}

async function startRelay(kind: string, upstreamPort: number, dir: string): Promise<[ChildProcess, number]> {
  if (kind === 'native') {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--relay', String(upstreamPort)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    return [child, (await firstLine(child)).port as number];
  }
  const port = 20000 + Math.floor(Math.random() * 10000);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off; master_process off; worker_processes 1;
pid ${dir}/nginx.pid; error_log ${dir}/error.log crit;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:${port} udp; proxy_pass 127.0.0.1:${upstreamPort}; proxy_timeout 60s;
  proxy_buffer_size 64k; } }
`,
  );
  const child = spawn('nginx', ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  await new Promise((r) => setTimeout(r, 500));
  return [child, port];
}

async function run(kind: string, size: number, seconds: number, window: number, clients: number) {
  const dir = mkdtempSync(join(tmpdir(), 'udp-relay-'));
  const echo = spawn(process.execPath, [ECHO, '--serve', 'native'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const upstreamPort = (await firstLine(echo)).port as number;
  const [proxy, port] = await startRelay(kind, upstreamPort, dir);
  let received = 0;
  const payload = Buffer.alloc(size, 0x61);
  const sockets = Array.from({ length: clients }, () => {
    const s = UdpSocket.bind({ address: '127.0.0.1', receiveBufferSize: BUF, sendBufferSize: BUF });
    s.onBatch((b) => {
      received += b.count;
      s.sendBatch(b);
    });
    return s;
  });
  const kick = (): void => {
    const each = Math.max(1, Math.floor(window / clients));
    for (const s of sockets)
      for (let i = 0; i < each; i += 64)
        s.sendBatch(
          Array.from({ length: Math.min(64, each - i) }, () => ({
            data: payload,
            address: '127.0.0.1',
            port,
          })),
        );
  };
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
  await new Promise((r) => setTimeout(r, 700));
  const r0 = received;
  const cpu0 = cpuSeconds(proxy.pid!);
  const t0 = process.hrtime.bigint();
  restarts = 0;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const got = received - r0;
  const cpu = cpuSeconds(proxy.pid!) - cpu0;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(watchdog);
  for (const s of sockets) s.close();
  proxy.kill('SIGKILL');
  echo.stdin!.end();
  await Promise.all([once(proxy, 'exit'), once(echo, 'exit')]);
  rmSync(dir, { recursive: true, force: true });
  return {
    relay: kind,
    size,
    datagramsPerSecond: Math.round(got / elapsed),
    relayCpuUsPerDatagram: Number(((cpu * 1e6) / Math.max(1, got * 2)).toFixed(3)),
    relayCpuShare: Number((cpu / elapsed).toFixed(2)),
    restarts,
    loadAverage: Number(loadavg()[0]?.toFixed(1)),
  };
}

if (values.relay) {
  relay(Number(values.relay));
} else {
  const results = [];
  for (const size of values.sizes.split(',').map(Number)) {
    for (const kind of ['native', 'nginx']) {
      const r = await run(kind, size, Number(values.seconds), Number(values.window), Number(values.clients));
      process.stdout.write(`${JSON.stringify(r)}\n`);
      results.push(r);
    }
  }
  console.table(results);
}
