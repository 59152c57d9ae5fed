/**
 * S3 and S6b: short connections from the C load generator (bench/tools/connload.c, `tunnels`),
 * each `GET /1k` with `Connection: close`, a fixed number in flight. S6b connects straight to
 * a `tcp` endpoint; S3 opens a CONNECT tunnel through a forward proxy for each. One load
 * generator per side, all at once: one side is the sequential bench's measurement, two are the
 * side-by-side mode's (side-by-side.ts), where both proxies see the same minute of the machine.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { lastJson, runCommand } from './procs.ts';
import type { Figures, ScenarioEnv } from './scenarios.ts';
import { type CpuSplit, cpuPer, cpuSplit, cpuSplitSince } from './threads.ts';

/** A proxy a load generator goes through: its address (null: straight to the upstream) and PID. */
export interface LoadSide {
  addr: string | null;
  pid: number | null;
}

/**
 * The two scenarios' names for the same figures (their tables and earlier results use them):
 * the unit of the per-unit CPU figures (`cpu_us_per_<unit>`), the rate's key, the latency's
 * prefix, and what an error calls one of them.
 */
export const FIGURE_NAMES = {
  S3: { unit: 'tunnel', rate: 'tunnels_per_s', latency: 'setup', noun: 'tunnel' },
  S6b: { unit: 'conn', rate: 'conns_per_s', latency: 'connect', noun: 'connection' },
} as const;

/** Connections in flight and source addresses of one load generator in the sequential bench. */
export const IN_FLIGHT = 64;
export const SOURCES = 16;

export async function shortConnections(
  env: ScenarioEnv,
  sc: 'S3' | 'S6b',
  sides: readonly LoadSide[],
  inFlight = IN_FLIGHT,
  sources = SOURCES,
): Promise<Figures[]> {
  const seconds = env.quick ? 3 : 10;
  const argsOf = (side: LoadSide, secs: number) => {
    const a = [
      'tunnels',
      '--path',
      '/1k',
      '-c',
      String(inFlight),
      '--sources',
      String(sources),
      '-d',
      String(secs),
    ];
    if (sc === 'S6b') return [...a, '--target', side.addr ?? env.upstream];
    return [...a, '--target', env.upstream, ...(side.addr ? ['--proxy', side.addr] : [])];
  };
  const all = (secs: number, timeoutMs: number) =>
    Promise.all(sides.map((s) => runCommand(env.connload, argsOf(s, secs), { timeoutMs })));
  await all(1, 20000); // warm-up
  await sleep(500);
  const before: (CpuSplit | null)[] = sides.map((s) => (s.pid ? cpuSplit(s.pid) : null));
  // The upstream serves every side: its CPU per unit is one side's only when there is one.
  const upstreamPid = sides.length === 1 ? env.upstreamPid : undefined;
  const upstreamBefore = upstreamPid ? cpuSplit(upstreamPid) : null;
  const t0 = Date.now();
  const results = await all(seconds, (seconds + 30) * 1000);
  const cpus = sides.map((s, i) => (s.pid && before[i] ? cpuSplitSince(s.pid, before[i]) : null));
  const upstreamCpu = upstreamPid && upstreamBefore ? cpuSplitSince(upstreamPid, upstreamBefore) : null;
  const elapsed = (Date.now() - t0) / 1000;
  const { unit, rate: rateKey, latency, noun } = FIGURE_NAMES[sc];
  return results.map((r, i) => {
    const j = lastJson(r.stdout);
    const n = Number(j.tunnels);
    if (n === 0) throw new Error(`no ${noun} completed: ${JSON.stringify(j)}`);
    const cpu = cpus[i] ?? null;
    const rate = Number(j.tunnels_per_s);
    // What a unit costs the proxy's neighbours on this machine: the load generator (its own
    // count of its CPU) and, measured alone, the upstream. Run alone, a proxy's rate can be
    // theirs to set (bench/analysis-l4.md, "what the client and the upstream spend").
    const neighbours: Record<string, number> = {};
    if (j.cpu_s !== undefined) neighbours[`client_us_per_${unit}`] = (Number(j.cpu_s) * 1e6) / n;
    if (upstreamCpu) neighbours[`upstream_us_per_${unit}`] = (upstreamCpu.total * 1e6) / n;
    return {
      ...cpuPer(cpu, n, unit),
      ...neighbours,
      primary: rate,
      [rateKey]: rate,
      [`${latency}_p50_ms`]: Number(j.setup_p50_ms),
      [`${latency}_p99_ms`]: Number(j.setup_p99_ms),
      errors: Number(j.errors),
      ...(cpu && sc === 'S6b' ? { cpu_share: cpu.total / elapsed } : {}),
    };
  });
}
