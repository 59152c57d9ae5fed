/**
 * The layer-4 scenarios: S6, a `tcp` endpoint with a fixed target (S6a one 1 GiB download through
 * one connection, S6b new connections per second, each a short HTTP exchange), and S7, a `udp`
 * endpoint (S7a/S7b a closed loop of 64 B / 1,200 B datagrams through an echo upstream, S7c DNS
 * queries to a responder). Every figure comes with the proxy's CPU time over the measured window
 * per unit of work, split for Oxy into its JS thread and its addon's reactor thread.
 *
 * The scenario functions are called by run.ts with the proxy's address (null: the "direct" row,
 * straight to the target) and its PID (for the CPU time; null for "direct").
 */
import { join } from 'node:path';
import { lastJson, runCommand } from './procs.ts';
import type { Scenario } from './proxies.ts';
import { type Figures, type ScenarioEnv, Unsupported } from './scenarios.ts';
import { shortConnections } from './short-conns.ts';
import { cpuPer, cpuSplit, cpuSplitSince } from './threads.ts';

/** What each layer-4 scenario measures, merged into METRICS. */
export const L4_METRICS: Record<
  Extract<Scenario, `S6${string}` | `S7${string}`>,
  { title: string; unit: string; higherIsBetter: boolean; what: string }
> = {
  S6a: {
    title: 'S6a: tcp endpoint, one connection, 1 GiB',
    unit: 'Gbit/s',
    higherIsBetter: true,
    what: 'curl downloads 1 GiB from the upstream through the fixed-target TCP proxy (one connection); CPU in proxy CPU seconds per GiB',
  },
  S6b: {
    title: 'S6b: tcp endpoint, new connections',
    unit: 'connections/s',
    higherIsBetter: true,
    what: 'each connection: connect, `GET /1k` (Connection: close), read the response, close; 64 at a time for 10 s (bench/tools/connload.c); client and upstream µs: the CPU the load generator and the upstream nginx spent per connection, which set the rate when the proxy has CPU to spare (bench/analysis-l4.md)',
  },
  S7a: {
    title: 'S7a: udp endpoint, 64 B datagrams',
    unit: 'datagrams/s',
    higherIsBetter: true,
    what: 'a closed loop of 256 datagrams of 64 B (4 client sockets) through the relay to an echo upstream and back, 5 s (bench/tools/udp-load.ts); datagrams/s counts those that came back, CPU per datagram counts each direction',
  },
  S7b: {
    title: 'S7b: udp endpoint, 1,200 B datagrams',
    unit: 'datagrams/s',
    higherIsBetter: true,
    what: 'as S7a with 1,200 B datagrams',
  },
  S7c: {
    title: 'S7c: udp endpoint, DNS',
    unit: 'queries/s',
    higherIsBetter: true,
    what: 'A queries from 16 client sockets, 4 in flight each, to a responder answering a fixed A record (bench/tools/udp-peers.ts), each answer checked, 5 s',
  },
};

/** What S11 measures, merged into METRICS. */
export const S11_METRICS: Record<
  Extract<Scenario, `S11${string}`>,
  { title: string; unit: string; higherIsBetter: boolean; what: string }
> = {
  S11a: {
    title: 'S11a: CONNECT-UDP over HTTP/2, one stream, 1,200 B datagrams',
    unit: 'datagrams/s',
    higherIsBetter: true,
    what: 'the closed loop of S7b (window 256) carried in DATAGRAM capsules on one extended CONNECT stream of one h2c connection (bench/tools/masque-load.ts, `oxy/masque`); compare with S7b of the same run',
  },
  S11b: {
    title: 'S11b: CONNECT-UDP over HTTP/2, 100 streams, 1,200 B datagrams',
    unit: 'datagrams/s',
    higherIsBetter: true,
    what: 'as S11a with the window spread over 100 tunnels (3 datagrams each) on one h2c connection',
  },
};

/** S6a: one download through the tcp endpoint, curl's own average speed. */
export async function runS6a(env: ScenarioEnv, proxy: string | null, pid: number | null): Promise<Figures> {
  const file = env.quick ? '/256m' : '/1g';
  const expected = env.quick ? 256 * 2 ** 20 : 2 ** 30;
  const before = pid ? cpuSplit(pid) : null;
  const r = await runCommand(
    'curl',
    [
      '-s',
      '-o',
      '/dev/null',
      '--max-time',
      '120',
      '-w',
      '%{speed_download} %{size_download} %{http_code}',
      `http://${proxy ?? env.upstream}${file}`,
    ],
    { timeoutMs: 130000 },
  );
  const cpu = pid && before ? cpuSplitSince(pid, before) : null;
  const [speed, size, code] = r.stdout.trim().split(' ').map(Number);
  if (code !== 200 || size !== expected)
    throw new Error(`curl: HTTP ${code}, ${size} of ${expected} bytes (exit ${r.code}) ${r.stderr.trim()}`);
  const gbps = ((speed ?? 0) * 8) / 1e9;
  const gib = expected / 2 ** 30;
  return {
    primary: gbps,
    gbit_per_s: gbps,
    ...(cpu
      ? { cpu_s_per_gib: cpu.total / gib, js_s_per_gib: cpu.js / gib, reactor_s_per_gib: cpu.reactor / gib }
      : {}),
  };
}

/** S6b: short connections from the C load generator, straight to the endpoint (no CONNECT). */
export async function runS6b(env: ScenarioEnv, proxy: string | null, pid: number | null): Promise<Figures> {
  const [figures] = await shortConnections(env, 'S6b', [{ addr: proxy, pid }]);
  return figures!;
}

/**
 * Runs one of the round-trip load generators (bench/tools/udp-load.ts, masque-load.ts), which
 * sample the proxy's CPU themselves: their last JSON line, the round trips (never 0) and the
 * proxy's CPU split (null without --pid).
 */
async function roundTrips(env: ScenarioEnv, tool: string, args: string[], timeoutMs: number) {
  const r = await runCommand(env.node, [join(env.root, `bench/tools/${tool}.ts`), ...args], { timeoutMs });
  if (r.code !== 0)
    throw new Error(`${tool}: exit ${r.code} ${r.stderr.trim().split('\n').slice(-2).join(' ')}`);
  const j = lastJson(r.stdout);
  const n = Number(j.round_trips);
  if (n === 0) throw new Error(`nothing came back: ${JSON.stringify(j)}`);
  const cpu =
    j.cpu_s === undefined
      ? null
      : {
          total: Number(j.cpu_s),
          js: Number(j.cpu_js_s),
          reactor: Number(j.cpu_reactor_s),
          other: Number(j.cpu_other_s),
        };
  return { j, n, cpu };
}

/** S7a, S7b, S7c: the UDP load generator in its own process, which also samples the proxy's CPU. */
export async function runS7(
  env: ScenarioEnv,
  sc: 'S7a' | 'S7b' | 'S7c',
  proxy: string | null,
  pid: number | null,
): Promise<Figures> {
  const dns = sc === 'S7c';
  const seconds = env.quick ? 2 : 5;
  const args = ['--target', proxy ?? (dns ? env.dns : env.udpEcho), '--seconds', String(seconds)];
  if (dns) args.push('--mode', 'dns', '--window', '64', '--clients', '16');
  else args.push('--size', sc === 'S7a' ? '64' : '1200', '--window', '256', '--clients', '4');
  if (pid) args.push('--pid', String(pid));
  const { j, n, cpu } = await roundTrips(env, 'udp-load', args, (seconds + 30) * 1000);
  // A datagram crosses the relay twice (out and back): CPU per datagram counts each crossing;
  // a DNS query is one exchange.
  const per = dns ? cpuPer(cpu, n, 'query') : cpuPer(cpu, n * 2, 'datagram');
  const rate = Number(j.round_trips_per_s);
  return {
    ...per,
    primary: rate,
    [dns ? 'queries_per_s' : 'datagrams_per_s']: rate,
    bad: Number(j.bad),
    restarts: Number(j.restarts),
    ...(cpu ? { cpu_share: cpu.total / Number(j.seconds) } : {}),
  };
}

/** S11a, S11b: CONNECT-UDP over HTTP/2 through Oxy's http endpoint to the UDP echo upstream. */
export async function runS11(
  env: ScenarioEnv,
  sc: 'S11a' | 'S11b',
  proxy: string | null,
  pid: number | null,
): Promise<Figures> {
  if (proxy === null) throw new Unsupported('S11 needs a MASQUE proxy');
  const seconds = env.quick ? 2 : 5;
  const args = [
    '--proxy',
    `http://${proxy}`,
    '--target',
    env.udpEcho,
    '--streams',
    sc === 'S11a' ? '1' : '100',
    '--seconds',
    String(seconds),
  ];
  if (pid) args.push('--pid', String(pid));
  const { j, n, cpu } = await roundTrips(env, 'masque-load', args, (seconds + 60) * 1000);
  const rate = Number(j.round_trips_per_s);
  return {
    ...cpuPer(cpu, n * 2, 'datagram'),
    primary: rate,
    datagrams_per_s: rate,
    bad: 0,
    restarts: Number(j.restarts),
    ...(cpu ? { cpu_share: cpu.total / Number(j.seconds) } : {}),
  };
}
