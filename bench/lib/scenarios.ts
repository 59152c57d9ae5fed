/**
 * The five scenarios of the comparison. Each takes the address of the proxy under test (or none
 * for the "direct" row) and returns the figures of one run. The load generators are separate
 * processes (wrk, curl, connload, the h2 client) so the harness's own event loop measures nothing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { S8_METRICS } from './intercept.ts';
import {
  lastJson,
  type Proc,
  runCommand,
  startProcess,
  stopProcess,
  treeCpuTicks,
  treePss,
} from './procs.ts';
import type { Scenario } from './proxies.ts';
import { L3_METRICS } from './scenarios-l3.ts';
import { L4_METRICS, S11_METRICS } from './scenarios-l4.ts';
import { shortConnections } from './short-conns.ts';
import { cpuSplit, cpuSplitSince, ctxSwitches } from './threads.ts';

/** Clock ticks per second of /proc/PID/stat (Linux's USER_HZ, 100 on every kernel we run). */
const CLOCK_TICKS = 100;

/** Paths and switches every scenario needs. */
export interface ScenarioEnv {
  readonly root: string;
  readonly work: string;
  readonly node: string;
  readonly connload: string;
  readonly upstream: string;
  /** The UDP echo upstream and the DNS responder of S7, host:port. */
  readonly udpEcho: string;
  readonly dns: string;
  /** The upstream nginx's master PID (its worker is its child), for what a unit costs it. */
  readonly upstreamPid?: number;
  readonly quick: boolean;
  /**
   * The `--pin` layout (S1): the load generator runs on CPU 0 with the upstream, the proxy alone
   * on CPU 1, so no proxy thread has a spare core and every hand-over between its threads is a
   * context switch on the same CPU.
   */
  readonly pin?: boolean;
}

/** The figures of one run. `primary` is the one the table and chart rank by. */
export interface Figures {
  readonly primary: number;
  readonly [key: string]: number | string | boolean;
}

/** A scenario the proxy cannot take part in (e.g. no HTTP/2): reported, not an error. */
export class Unsupported extends Error {}

/** What each scenario measures, for tables and charts. */
export const METRICS: Record<
  Scenario,
  { title: string; unit: string; higherIsBetter: boolean; what: string }
> = {
  S1: {
    title: 'S1: forward HTTP/1.1 keep-alive',
    unit: 'requests/s',
    higherIsBetter: true,
    what: 'absolute-form GET of 1 KiB, wrk, 64 connections, 10 s',
  },
  S2: {
    title: 'S2: one CONNECT tunnel, 1 GiB',
    unit: 'Gbit/s',
    higherIsBetter: true,
    what: 'curl -p through the proxy, 1 GiB from the upstream',
  },
  S3: {
    title: 'S3: short tunnels',
    unit: 'tunnels/s',
    higherIsBetter: true,
    what: 'CONNECT, one 1 KiB GET inside, close; 64 at a time for 10 s (bench/tools/connload.c); client and upstream µs: the CPU the load generator and the upstream nginx spent per tunnel (the upstream measured only when one proxy runs)',
  },
  S4: {
    title: 'S4: 5,000 idle CONNECT tunnels',
    unit: 'KiB/tunnel',
    higherIsBetter: false,
    what: 'growth of the proxy PSS (all its processes) with 5,000 idle tunnels open, per tunnel',
  },
  S5: {
    title: 'S5: HTTP/2, 100 CONNECT streams on one connection',
    unit: 'Gbit/s',
    higherIsBetter: true,
    what: 'h2c, 100 CONNECT streams each carrying a GET of 10 MiB (bench/tools/h2-connect.ts); the direct row uses 100 TCP connections, as no peer speaks HTTP/2 CONNECT in cleartext',
  },
  ...L4_METRICS,
  ...L3_METRICS,
  S9: {
    title: 'S9: forward HTTP/1.1 GET of 1 GiB, with and without a counting body hook',
    unit: 'Gbit/s',
    higherIsBetter: true,
    what: 'curl -x (absolute-form, no tunnel), 1 GiB from the upstream; oxy-body counts every body byte in a body hook, oxy-head has a head hook only (same path, no body stage), oxy has no hook (lean path)',
  },
  ...S8_METRICS,
  ...S11_METRICS,
};

/** S1: wrk with the absolute-form request line; a short warm-up first, then the measured run. */
export async function runS1(
  env: ScenarioEnv,
  proxy: string | null,
  pid: number | null = null,
): Promise<Figures> {
  const url = proxy ? `http://${env.upstream}/1k` : '/1k';
  const wrkEnv = { BENCH_URL: url, BENCH_HOST: env.upstream };
  const target = `http://${proxy ?? env.upstream}/`;
  const script = join(env.root, 'bench/s1.lua');
  const seconds = env.quick ? 3 : 10;
  // With --pin, wrk shares CPU 0 with the upstream (the harness pinned the proxy and the upstream).
  const wrk = (args: string[]): [string, string[]] =>
    env.pin ? ['taskset', ['-c', '0', 'wrk', ...args]] : ['wrk', args];
  await runCommand(...wrk(['-t1', '-c64', '-d1s', '-s', script, target]), { env: wrkEnv, timeoutMs: 20000 });
  // The proxy's CPU (every thread, user + system) over the measured run, per request; Oxy's JS
  // and reactor threads apart; its context switches (each voluntary one is a sleep and a wake-up).
  const ticksBefore = pid === null ? 0 : treeCpuTicks(pid);
  const splitBefore = pid === null ? null : cpuSplit(pid);
  const ctxBefore = pid === null ? null : ctxSwitches(pid);
  const r = await runCommand(
    ...wrk(['-t2', '-c64', `-d${seconds}s`, '--timeout', '5s', '-s', script, target]),
    {
      env: wrkEnv,
      timeoutMs: (seconds + 30) * 1000,
    },
  );
  const split = pid === null || splitBefore === null ? null : cpuSplitSince(pid, splitBefore);
  const ctxAfter = pid === null ? null : ctxSwitches(pid);
  const j = lastJson(r.stdout);
  const requests = Number(j.requests);
  const errors =
    Number(j.err_connect) +
    Number(j.err_read) +
    Number(j.err_write) +
    Number(j.err_status) +
    Number(j.err_timeout);
  const rps = requests / (Number(j.duration_us) / 1e6);
  if (requests === 0) throw new Error(`no request succeeded (errors ${errors})`);
  const cpuUs = pid === null ? null : ((treeCpuTicks(pid) - ticksBefore) * 1e6) / CLOCK_TICKS / requests;
  const perReq = (x: number): number => x / requests;
  return {
    primary: rps,
    rps,
    ...(cpuUs === null ? {} : { cpu_us_per_req: cpuUs }),
    ...(split === null
      ? {}
      : {
          js_us_per_req: perReq(split.js * 1e6),
          reactor_us_per_req: perReq(split.reactor * 1e6),
          other_us_per_req: perReq(split.other * 1e6),
        }),
    ...(ctxBefore === null || ctxAfter === null
      ? {}
      : {
          vcsw_per_req: perReq(ctxAfter.voluntary - ctxBefore.voluntary),
          ivcsw_per_req: perReq(ctxAfter.involuntary - ctxBefore.involuntary),
        }),
    p50_ms: Number(j.p50_us) / 1000,
    p99_ms: Number(j.p99_us) / 1000,
    // wrk's correction for coordinated omission undone (bench/s1.lua)
    p99_measured_ms: Number(j.p99_measured_us) / 1000,
    errors,
    non_2xx: Number(j.err_status),
  };
}

/** S2: one tunnel, one big download, curl's own average speed. */
export async function runS2(env: ScenarioEnv, proxy: string | null): Promise<Figures> {
  const file = env.quick ? '/256m' : '/1g';
  const args = [
    '-s',
    '-o',
    '/dev/null',
    '--max-time',
    '120',
    '-w',
    '%{speed_download} %{size_download} %{http_code}',
  ];
  if (proxy) args.push('-p', '-x', `http://${proxy}`);
  args.push(`http://${env.upstream}${file}`);
  const r = await runCommand('curl', args, { timeoutMs: 130000 });
  const [speed, size, code] = r.stdout.trim().split(' ').map(Number);
  const expected = env.quick ? 256 * 2 ** 20 : 2 ** 30;
  if (code !== 200 || size !== expected) {
    throw new Error(`curl: HTTP ${code}, ${size} of ${expected} bytes (exit ${r.code}) ${r.stderr.trim()}`);
  }
  const gbps = ((speed ?? 0) * 8) / 1e9;
  return { primary: gbps, gbit_per_s: gbps, bytes: size };
}

/**
 * S3: short tunnels from the C load generator. With the proxy's `pid`, also its CPU per tunnel
 * (all its threads, and Oxy's JS and reactor threads apart): steadier than the rate on a
 * shared machine.
 */
export async function runS3(
  env: ScenarioEnv,
  proxy: string | null,
  pid: number | null = null,
): Promise<Figures> {
  const [figures] = await shortConnections(env, 'S3', [{ addr: proxy, pid }]);
  return figures!;
}

async function holdIdle(
  env: ScenarioEnv,
  proxy: string,
  n: number,
): Promise<{ proc: Proc; result: Figures }> {
  // A fresh log per call: the result line is read from it, and an old line would be taken as new.
  const log = join(env.work, `connload-idle-${n}-${Date.now()}.log`);
  const proc = startProcess(
    'connload-idle',
    env.connload,
    ['idle', '--proxy', proxy, '--target', env.upstream, '-n', String(n), '-c', '200'],
    {
      logFile: log,
    },
  );
  // The result line arrives on stdout, which startProcess sends to the log; poll the log.
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    await sleep(200);
    const text = readFileSync(log, 'utf8');
    if (text.includes('"mode":"idle"')) {
      const j = lastJson(text);
      return { proc, result: { primary: Number(j.established), ...j } };
    }
  }
  throw new Error(`idle tunnels not settled after 60 s (see ${log})`);
}

/** S4: PSS growth of the proxy's process tree per idle tunnel, after a small warm-up. */
export async function runS4(
  env: ScenarioEnv,
  proxy: string | null,
  proxyPid: number | null,
): Promise<Figures> {
  if (!proxy || proxyPid === null) throw new Unsupported('no proxy: nothing to measure');
  const n = env.quick ? 1000 : 5000;
  const warm = await holdIdle(env, proxy, 200);
  await sleep(500);
  await stopProcess(warm.proc);
  await sleep(1500);
  const before = treePss(proxyPid);
  const held = await holdIdle(env, proxy, n);
  try {
    await sleep(2000);
    const after = treePss(proxyPid);
    const established = Number(held.result.established);
    if (established < n * 0.99) throw new Error(`only ${established} of ${n} tunnels established`);
    const kib = (after - before) / 1024 / established;
    return {
      primary: kib,
      kib_per_tunnel: kib,
      established,
      pss_before_mib: before / 2 ** 20,
      pss_after_mib: after / 2 ** 20,
    };
  } finally {
    await stopProcess(held.proc);
  }
}

/** S5: the h2 client, in its own Node process. */
export async function runS5(env: ScenarioEnv, proxy: string | null): Promise<Figures> {
  const args = [join(env.root, 'bench/tools/h2-connect.ts'), '--target', env.upstream, '--streams', '100'];
  args.push('--path', env.quick ? '/2m' : '/10m');
  if (proxy) args.push('--proxy', proxy);
  const r = await runCommand(env.node, args, { timeoutMs: 90000 });
  const j = lastJson(r.stdout);
  if (j.error) throw new Error(String(j.error));
  if (j.unsupported) throw new Unsupported(String(j.unsupported));
  if (Number(j.ok) === 0) throw new Error(`no stream completed: ${JSON.stringify(j)}`);
  return {
    primary: Number(j.gbit_per_s),
    gbit_per_s: Number(j.gbit_per_s),
    ok: Number(j.ok),
    errors: Number(j.errors),
  };
}

/** S9: one absolute-form download through the proxy (bodies pass its HTTP path, not a tunnel), with the proxy's CPU per GiB. */
export async function runS9(env: ScenarioEnv, proxy: string | null, pid: number | null): Promise<Figures> {
  const file = env.quick ? '/256m' : '/1g';
  const expected = env.quick ? 256 * 2 ** 20 : 2 ** 30;
  const before = pid ? cpuSplit(pid) : null;
  const args = [
    '-s',
    '-o',
    '/dev/null',
    '--max-time',
    '120',
    '-w',
    '%{speed_download} %{size_download} %{http_code}',
  ];
  if (proxy) args.push('-x', `http://${proxy}`);
  args.push(`http://${env.upstream}${file}`);
  const r = await runCommand('curl', args, { timeoutMs: 130000 });
  const cpu = pid && before ? cpuSplitSince(pid, before) : null;
  const [speed, size, code] = r.stdout.trim().split(' ').map(Number);
  if (code !== 200 || size !== expected)
    throw new Error(`curl: HTTP ${code}, ${size} of ${expected} bytes (exit ${r.code}) ${r.stderr.trim()}`);
  const gbps = ((speed ?? 0) * 8) / 1e9;
  const gib = expected / 2 ** 30;
  return { primary: gbps, gbit_per_s: gbps, ...(cpu ? { cpu_s_per_gib: cpu.total / gib } : {}) };
}
