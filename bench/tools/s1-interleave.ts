/**
 * S1 with the proxies alive side by side, measured in short interleaved windows: a same-time
 * comparison that stays usable on a shared, noisy machine, where `npm run bench` (one fresh
 * process per measurement, minutes apart) compares one moment's machine with another's.
 *
 *   node bench/tools/s1-interleave.ts [--ref DIR] [--ref-flags=FLAGS] [--ref-env=K=V] [--no-ts]
 *     [--pin] [--rounds 8] [--seconds 2] [--gc] [--port-base 22080] [--connections 64]
 *
 * Starts the harness's nginx upstream (its config, another port), Oxy from this checkout, Oxy
 * from `--ref` (another checkout with `node_modules` and the addon built; `bin/oxy` as the
 * harness runs it; `--ref-flags=FLAGS` gives it `OXY_NODE_FLAGS` instead of `bin/oxy`'s
 * default, and without `--ref` it is this checkout: an A/B of V8 flags; `--ref-env=K=V` sets an
 * environment variable for it alone, e.g. `OXY_NATIVE_H1=0` for an A/B of the native HTTP/1.1
 * engine) and trafficserver (the
 * harness's settings), warms each up, then for each round measures every proxy for `--seconds`
 * in turn (the order rotated each round) with `wrk -t2 -c64` (`--connections`) and `bench/s1.lua`. Per window:
 * requests/s, p99 (wrk's, and measured: its coordinated-omission correction undone,
 * bench/s1.lua), CPU µs per request of the process tree (all threads) and of the main thread,
 * the threads' time waiting for a CPU and their sleeps (voluntary context switches) per request,
 * the upstream nginx's CPU per request and each CPU's idle share (`/proc/stat`: CPU 0 / CPU 1).
 * Prints one line per proxy with the windows and their medians. `--pin`: each proxy on CPU 1, nginx and wrk on CPU 0. `--gc`: the Oxy
 * processes run with `--trace-gc-nvp` and also report V8's own count of bytes allocated per
 * request and GC pause per request (their log lines counted between the window's ends).
 * `--port-base`: the upstream's port; the proxies listen at +41, +42 and +50.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { processTree, waitForPort } from '../lib/procs.ts';
import { trafficserverEnv } from '../lib/proxies.ts';
import { ctxSwitches } from '../lib/threads.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    ref: { type: 'string' },
    'ref-flags': { type: 'string' },
    'ref-env': { type: 'string' },
    'no-ts': { type: 'boolean', default: false },
    pin: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '2' },
    gc: { type: 'boolean', default: false },
    'port-base': { type: 'string', default: '22080' },
    connections: { type: 'string', default: '64' },
  },
});
// Other checkouts may run this tool at the same time: --port-base moves all its ports.
const BASE = Number(values['port-base']);
const UPSTREAM = BASE;
const CONNECTIONS = Number(values.connections);
const WORK = join(ROOT, 'bench/.work/s1-interleave');
mkdirSync(WORK, { recursive: true });
const kids: ChildProcess[] = [];
// SIGTERM, not SIGKILL: nginx's master then stops its worker (a killed master leaves it listening).
process.once('exit', () => {
  for (const k of kids) if (k.exitCode === null) k.kill('SIGTERM');
});
const onCpu0 = (cmd: string[]): string[] => (values.pin ? ['taskset', '-c', '0', ...cmd] : cmd);
function start(cmd: string[], env: NodeJS.ProcessEnv = {}, log = 'ignore'): ChildProcess {
  const out = log === 'ignore' ? 'ignore' : 'pipe';
  const c = spawn(cmd[0] as string, cmd.slice(1), {
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  kids.push(c);
  return c;
}

// The harness's upstream config (bench/lib/proxies.ts writes it on every run), on another port.
const nginxConf = readFileSync(join(ROOT, 'bench/.work/upstream/nginx.conf'), 'utf8')
  .replaceAll(':21080', `:${UPSTREAM}`)
  .replaceAll(join(ROOT, 'bench/.work/upstream'), WORK);
writeFileSync(join(WORK, 'nginx.conf'), nginxConf);
const nginx = start(onCpu0(['nginx', '-c', join(WORK, 'nginx.conf')]));
await waitForPort('127.0.0.1', UPSTREAM, 10000);

interface Target {
  name: string;
  port: number;
  pid: number;
  /** Oxy's output (for --gc), as far as read. */
  log: string[];
}
const targets: Target[] = [];
const gcFlag = values.gc ? ' --trace-gc-nvp' : '';
const oxies: [string, string, string][] = [['oxy', ROOT, `--max-semi-space-size=8${gcFlag}`]];
if (values.ref !== undefined || values['ref-flags'] !== undefined || values['ref-env'] !== undefined)
  oxies.push([
    'oxy-ref',
    resolve(values.ref ?? ROOT),
    `${values['ref-flags'] ?? '--max-semi-space-size=8'}${gcFlag}`,
  ]);
const refEnv: Record<string, string> = {};
if (values['ref-env'] !== undefined) {
  const eq = values['ref-env'].indexOf('=');
  refEnv[values['ref-env'].slice(0, eq)] = values['ref-env'].slice(eq + 1);
}
let port = BASE + 40;
for (const [name, root, flags] of oxies) {
  port++;
  const cfg = join(WORK, `${name}.yaml`);
  writeFileSync(
    cfg,
    `endpoints:\n  main:\n    addr: "127.0.0.1:${port}"\negress:\n  blocked_cidrs: []\nworkers: 1\nrestart:\n  socket: "${WORK}/${name}.sock"\n`,
  );
  // Line-buffered, so that a window's GC lines arrive before its end.
  const c = start(
    ['stdbuf', '-oL', join(root, 'node_modules/.bin/oxy'), '-c', cfg],
    { OXY_NODE_FLAGS: flags, ...(name === 'oxy-ref' ? refEnv : {}) },
    'pipe',
  );
  const t: Target = { name, port, pid: c.pid as number, log: [] };
  c.stdout?.setEncoding('utf8').on('data', (d: string) => t.log.push(d));
  c.stderr?.resume();
  await waitForPort('127.0.0.1', port, 60000);
  targets.push(t);
}
if (!values['no-ts']) {
  port = BASE + 50;
  const c = start(['traffic_server'], trafficserverEnv(port));
  await waitForPort('127.0.0.1', port, 60000);
  targets.push({ name: 'trafficserver', port, pid: c.pid as number, log: [] });
}

/**
 * Run time (ns) of a process tree, all threads, and of its main thread; `wait`: its threads'
 * time runnable but not running (schedstat's run delay: the machine's share of a tail); `sleeps`:
 * their voluntary context switches.
 */
function cpu(pid: number): { all: number; main: number; wait: number; sleeps: number } {
  let all = 0;
  let main = 0;
  let wait = 0;
  for (const p of processTree(pid)) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const [run, delay] = readFileSync(`/proc/${p}/task/${tid}/schedstat`, 'utf8').split(' ');
        const ns = Number(run);
        all += ns;
        wait += Number(delay);
        if (Number(tid) === pid) main += ns;
      } catch {
        // the thread exited
      }
    }
  }
  return { all, main, wait, sleeps: ctxSwitches(pid).voluntary };
}

const wrkEnv = {
  ...process.env,
  BENCH_URL: `http://127.0.0.1:${UPSTREAM}/1k`,
  BENCH_HOST: `127.0.0.1:${UPSTREAM}`,
};
function wrk(port: number, args: string[]): Record<string, number> {
  const cmd = onCpu0(['wrk', ...args, '-s', join(ROOT, 'bench/s1.lua'), `http://127.0.0.1:${port}/`]);
  const r = spawnSync(cmd[0] as string, cmd.slice(1), { env: wrkEnv, encoding: 'utf8', timeout: 60000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (line === undefined) throw new Error(`wrk: ${r.stderr}`);
  return JSON.parse(line) as Record<string, number>;
}

/** Idle and total jiffies of each CPU (`/proc/stat`), by CPU number. */
function cpuStat(): { idle: number; all: number }[] {
  const out: { idle: number; all: number }[] = [];
  for (const l of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(l);
    if (m === null) continue;
    const v = (m[2] as string).split(' ').map(Number);
    out[Number(m[1])] = { idle: (v[3] ?? 0) + (v[4] ?? 0), all: v.reduce((a, b) => a + b, 0) };
  }
  return out;
}

/** Bytes allocated and pause (ms) of the scavenges in `text` (--trace-gc-nvp lines). */
function gcOf(text: string): { bytes: number; pause: number } {
  let bytes = 0;
  let pause = 0;
  for (const l of text.split('\n')) {
    if (!l.includes(' gc=')) continue;
    bytes += Number(/ allocated=(\d+)/.exec(l)?.[1] ?? 0);
    pause += Number(/ pause=([\d.]+)/.exec(l)?.[1] ?? 0);
  }
  return { bytes, pause };
}

for (const t of targets) {
  if (values.pin)
    for (const p of processTree(t.pid)) spawnSync('taskset', ['-a', '-p', '-c', '1', String(p)]);
  wrk(t.port, ['-t1', '-c64', '-d3s']); // warm-up
}
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
type Row = Record<
  'rps' | 'p99' | 'p99m' | 'us' | 'main' | 'wait' | 'sleeps' | 'nginx' | 'idle0' | 'idle1' | 'bytes' | 'gcUs',
  number[]
>;
const rows = new Map<string, Row>();
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < targets.length; i++) {
    const t = targets[(i + r) % targets.length] as Target;
    // wrk runs synchronously: Oxy's output is read in these pauses, before and after the window.
    if (values.gc) await sleep(300);
    const before = cpu(t.pid);
    const upBefore = cpu(nginx.pid as number).all;
    const statBefore = cpuStat();
    const logAt = t.log.length;
    const j = wrk(t.port, [CONNECTIONS > 1 ? '-t2' : '-t1', `-c${CONNECTIONS}`, `-d${seconds}s`]);
    const after = cpu(t.pid);
    const upAfter = cpu(nginx.pid as number).all;
    const statAfter = cpuStat();
    if (values.gc) await sleep(300);
    const n = j.requests as number;
    const row = rows.get(t.name) ?? {
      rps: [],
      p99: [],
      p99m: [],
      us: [],
      main: [],
      wait: [],
      sleeps: [],
      nginx: [],
      idle0: [],
      idle1: [],
      bytes: [],
      gcUs: [],
    };
    rows.set(t.name, row);
    row.rps.push(n / ((j.duration_us as number) / 1e6));
    row.p99.push((j.p99_us as number) / 1000);
    row.p99m.push((j.p99_measured_us as number) / 1000);
    row.us.push((after.all - before.all) / 1e3 / n);
    row.main.push((after.main - before.main) / 1e3 / n);
    row.wait.push((after.wait - before.wait) / 1e6 / seconds);
    row.sleeps.push((after.sleeps - before.sleeps) / n);
    row.nginx.push((upAfter - upBefore) / 1e3 / n);
    const idle = (c: number): number =>
      ((statAfter[c]?.idle ?? 0) - (statBefore[c]?.idle ?? 0)) /
      ((statAfter[c]?.all ?? 0) - (statBefore[c]?.all ?? 0) || 1);
    row.idle0.push(idle(0) * 100);
    row.idle1.push(idle(1) * 100);
    if (values.gc && t.name !== 'trafficserver') {
      const gc = gcOf(t.log.slice(logAt).join(''));
      row.bytes.push(gc.bytes / n);
      row.gcUs.push((gc.pause * 1000) / n);
    }
  }
  process.stderr.write(
    `round ${r + 1}/${rounds}, load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}\n`,
  );
}
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? Number.NaN;
const f = (x: number, d = 1): string => x.toFixed(d);
for (const [name, row] of rows) {
  let line = `${name.padEnd(14)} µs/request ${row.us.map((x) => f(x)).join(' ')} | median ${f(median(row.us))} (main thread ${f(median(row.main))}, waiting for a CPU ${f(median(row.wait))} ms/s, sleeps ${f(median(row.sleeps), 2)}/request; nginx ${f(median(row.nginx))} µs/request; CPU idle ${f(median(row.idle0), 0)} % / ${f(median(row.idle1), 0)} %), requests/s ${f(median(row.rps), 0)}, p99 ${f(median(row.p99), 2)} ms (measured ${f(median(row.p99m), 2)})`;
  if (row.bytes.length > 0)
    line += `, allocated ${f(median(row.bytes), 0)} B/request, GC pause ${f(median(row.gcUs), 2)} µs/request`;
  process.stdout.write(`${line}\n`);
}
process.stdout.write(
  `layout ${values.pin ? 'pinned' : 'free'}, load average ${readFileSync('/proc/loadavg', 'utf8').trim()}\n`,
);
process.exit(0);
