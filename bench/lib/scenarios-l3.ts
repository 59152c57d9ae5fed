/**
 * S10, the IP→TCP upgrade: bench/tools/upgrade-host.ts is the process under test (an Oxy
 * runtime, its upgrade service, and a client network namespace whose default route is a TUN
 * device bridged into it, every flow redirected to the harness's upstream). S10a downloads 1 GiB
 * with curl inside the namespace through one upgraded flow; S10b opens short upgraded flows (a
 * `GET /1k` each) with connload inside the namespace. A packet crosses JS twice (client TUN →
 * JS → upgrade TUN, and back), so the JS thread's figure includes the bridge an IP tunnel on-ramp
 * would replace. The "direct" row of S10a is curl straight to the upstream.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { launch } from './launch.ts';
import { lastJson, runCommand } from './procs.ts';
import type { BenchEnv, Running, Scenario } from './proxies.ts';
import type { Figures, ScenarioEnv } from './scenarios.ts';
import { cpuSplit, cpuSplitSince } from './threads.ts';

/** The client namespace of S10 (made and removed by upgrade-host.ts). */
export const S10_NAMESPACE = 'oxybench-s10';
/** The destination the client asks for; the upgrade redirects every flow to the upstream. */
const CLIENT_TARGET = '198.18.0.10:80';

/** What each S10 figure measures, merged into METRICS. */
export const L3_METRICS: Record<
  Extract<Scenario, `S10${string}`>,
  { title: string; unit: string; higherIsBetter: boolean; what: string }
> = {
  S10a: {
    title: 'S10a: IP→TCP upgrade, one flow, 1 GiB',
    unit: 'Gbit/s',
    higherIsBetter: true,
    what: 'curl in a client namespace whose default route is a TUN device bridged into the upgrade (MTU 65,000 both TUNs) downloads 1 GiB from the upstream through one upgraded flow; CPU in cores per Gbit/s, split by thread (JS, reactor, other = V8 GC and helpers)',
  },
  S10b: {
    title: 'S10b: IP→TCP upgrade, new flows',
    unit: 'flows/s',
    higherIsBetter: true,
    what: 'connload in the client namespace: each flow connects, `GET /1k` (Connection: close), reads the response, closes; 64 at a time for 10 s',
  },
};

/** Starts upgrade-host.ts as S10's process under test; ready once it listens on `port`. */
export function startUpgradeHost(env: BenchEnv, name: string, port: number): Promise<Running> {
  const tool = join(env.root, 'bench/tools/upgrade-host.ts');
  const args = [tool, '--port', String(port), '--upstream', env.upstream, '--ns', S10_NAMESPACE];
  return launch(env, name, port, env.node, args, env.oxyEnv, 20000);
}

/** A command inside the client namespace (or, for the direct row, in this one). */
function inClient(proxy: string | null, cmd: string, args: string[]): [string, string[]] {
  return proxy === null ? [cmd, args] : ['ip', ['netns', 'exec', S10_NAMESPACE, cmd, ...args]];
}

/** S10a: one upgraded flow, curl's own average speed, and CPU per Gbit/s by thread. */
export async function runS10a(env: ScenarioEnv, proxy: string | null, pid: number | null): Promise<Figures> {
  const file = env.quick ? '/256m' : '/1g';
  const expected = env.quick ? 256 * 2 ** 20 : 2 ** 30;
  const host = proxy === null ? env.upstream : CLIENT_TARGET;
  const [cmd, args] = inClient(proxy, 'curl', [
    '-s',
    '-o',
    '/dev/null',
    '--max-time',
    '120',
    '-w',
    '%{speed_download} %{size_download} %{http_code}',
    `http://${host}${file}`,
  ]);
  const before = pid ? cpuSplit(pid) : null;
  const t0 = performance.now();
  const r = await runCommand(cmd, args, { timeoutMs: 130000 });
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = pid && before ? cpuSplitSince(pid, before) : null;
  const [speed, size, code] = r.stdout.trim().split(' ').map(Number);
  if (code !== 200 || size !== expected)
    throw new Error(`curl: HTTP ${code}, ${size} of ${expected} bytes (exit ${r.code}) ${r.stderr.trim()}`);
  const gbps = ((speed ?? 0) * 8) / 1e9;
  // Cores busy per Gbit/s moved: CPU seconds over the window / seconds / Gbit/s.
  const per = (s: number) => s / elapsed / gbps;
  return {
    primary: gbps,
    gbit_per_s: gbps,
    ...(cpu
      ? {
          cores_per_gbps: per(cpu.total),
          js_cores_per_gbps: per(cpu.js),
          reactor_cores_per_gbps: per(cpu.reactor),
          other_cores_per_gbps: per(cpu.other),
          cpu_s_per_gib: cpu.total / (expected / 2 ** 30),
        }
      : {}),
  };
}

/** S10b: short upgraded flows from the C load generator inside the client namespace. */
export async function runS10b(env: ScenarioEnv, proxy: string | null, pid: number | null): Promise<Figures> {
  const seconds = env.quick ? 3 : 10;
  const base = [
    'tunnels',
    '--target',
    proxy === null ? env.upstream : CLIENT_TARGET,
    '--path',
    '/1k',
    '-c',
    '64',
  ];
  const [cmd, warm] = inClient(proxy, env.connload, [...base, '-d', '1']);
  await runCommand(cmd, warm, { timeoutMs: 20000 });
  await sleep(500);
  const [, args] = inClient(proxy, env.connload, [...base, '-d', String(seconds)]);
  const before = pid ? cpuSplit(pid) : null;
  const r = await runCommand(cmd, args, { timeoutMs: (seconds + 30) * 1000 });
  const cpu = pid && before ? cpuSplitSince(pid, before) : null;
  const j = lastJson(r.stdout);
  const flows = Number(j.tunnels);
  if (flows === 0) throw new Error(`no flow completed: ${JSON.stringify(j)}`);
  const us = (s: number) => (s * 1e6) / flows;
  return {
    primary: Number(j.tunnels_per_s),
    flows_per_s: Number(j.tunnels_per_s),
    connect_p50_ms: Number(j.setup_p50_ms),
    connect_p99_ms: Number(j.setup_p99_ms),
    errors: Number(j.errors),
    ...(cpu
      ? { cpu_us_per_flow: us(cpu.total), js_us_per_flow: us(cpu.js), reactor_us_per_flow: us(cpu.reactor) }
      : {}),
  };
}
