/**
 * `npm run bench -- [scenario|all] [proxy|all] [--quick] [--runs N] [--docs] [--cpu-prof]`
 *
 * The one command that reproduces the side-by-side comparison of docs/benchmarks.md: installs
 * what it lacks, starts the upstream, then for each run, scenario and proxy (interleaved, the
 * order of proxies rotated each run) starts the proxy, measures, and stops it by PID. It prints
 * one JSON line per measurement and a markdown table of medians per scenario. A measurement
 * during which other processes used more than 10 % of the machine is marked busy and repeated
 * once at the end of its run.
 *
 *   npm run bench -- --report bench/.work/results-X.jsonl [--command "npm run bench -- …"]
 *     regenerates docs from saved lines (--command: the command they came from, for the page).
 *
 * Scenarios and proxies may be comma lists (`S1,S3 oxy,squid`). `--docs` writes
 * docs/benchmarks.md and docs/bench/*.svg (the default for a full run that is not --quick).
 * `--cpu-prof` runs Oxy under `node --cpu-prof`; profiles land in bench/.work/prof/.
 * `--pin` (any scenario) emulates a machine with no spare core for the proxy: the proxy, all its threads,
 * alone on CPU 1; the load generator, the upstream and the harness on CPU 0 (taskset).
 * `--side-by-side` (S3, S6b) runs the first proxy of the list at the same time as each of the
 * others, each with its own load generator, so that both see the same minute of the machine
 * (bench/lib/side-by-side.ts); it prints a table of pairs and writes no page. Without it, a run
 * of S6b that is not --quick or --pin measures Oxy beside HAProxy and nginx that way as well,
 * after the sequential runs, for docs/bench-l4.md.
 * Every process starts in a session of its own (`BENCH_SESSIONS=shared`: in the harness's), so
 * that where the kernel schedules sessions as groups (autogroup) CPU is shared between services.
 */
import { type StdioOptions, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runS8, startTlsOrigin } from './lib/intercept.ts';
import { BUSY_THRESHOLD, CpuWatch, describeMachine, foreignLoad } from './lib/machine.ts';
import { installCleanup, pinTree, stopProcess } from './lib/procs.ts';
import {
  type BenchEnv,
  HTTP_SCENARIOS,
  L3_SCENARIOS,
  L4_SCENARIOS,
  PROXIES,
  type ProxyDef,
  type Running,
  SCENARIOS,
  type Scenario,
  startUdpPeers,
  startUpstream,
} from './lib/proxies.ts';
import { page, type ResultLine, summarise, svgChart, table } from './lib/report.ts';
import { l3Page } from './lib/report-l3.ts';
import { l4Page } from './lib/report-l4.ts';
import {
  type Figures,
  METRICS,
  runS1,
  runS2,
  runS3,
  runS4,
  runS5,
  runS9,
  type ScenarioEnv,
  Unsupported,
} from './lib/scenarios.ts';
import { runS10a, runS10b } from './lib/scenarios-l3.ts';
import { runS6a, runS6b, runS7, runS11 } from './lib/scenarios-l4.ts';
import {
  buildConnload,
  buildTool,
  ensureApt,
  ensureDocroot,
  ensureNpmPeers,
  TOOL_PACKAGES,
  versions,
} from './lib/setup.ts';
import {
  measurePair,
  pairTable,
  SIDE_BY_SIDE_SCENARIOS,
  type SideBySideScenario,
  type Started,
  summarisePairs,
} from './lib/side-by-side.ts';
import { describePlacement, wakePlacement, wakeRoundTrip } from './lib/wake.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const UPSTREAM_PORT = 21080;
/** The UDP upstreams of S7 (bench/tools/udp-peers.ts): an echo server and a DNS responder. */
const UDP_ECHO_PORT = 21081;
const DNS_PORT = 21082;
const FIRST_PROXY_PORT = 21100;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    docs: { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    pin: { type: 'boolean', default: false },
    'side-by-side': { type: 'boolean', default: false },
    report: { type: 'string' },
    command: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function log(s: string): void {
  process.stderr.write(`bench: ${s}\n`);
}

/** Names that stand for several scenarios on the command line. */
const GROUPS: Record<string, string[]> = {
  S6: ['S6a', 'S6b'],
  S7: ['S7a', 'S7b', 'S7c'],
  S10: ['S10a', 'S10b'],
  S8: ['S8a', 'S8b'],
  // S7b is the same load through a plain udp endpoint, measured beside S11 in the same run.
  S11: ['S7b', 'S11a', 'S11b'],
};

function pick<T extends string>(arg: string | undefined, all: readonly T[], what: string): T[] {
  if (!arg || arg === 'all') return [...all];
  const wanted = arg.split(',').flatMap((w) => GROUPS[w] ?? [w]);
  for (const w of wanted) {
    if (!all.includes(w as T)) {
      log(`unknown ${what} "${w}"; one of: ${all.join(', ')}, all`);
      process.exit(2);
    }
  }
  return wanted as T[];
}

/** "YYYY-MM-DD HH:MM UTC" of an ISO time. */
const minuteOf = (iso: string): string => `${iso.slice(0, 16).replace('T', ' ')} UTC`;

/** Measured at the start of a run (bench/lib/wake.ts), for the page's machine line. */
let wakeNote = '';

async function docInfo(env: BenchEnv, command: string, measuredAt?: string) {
  // Hand-written findings (profiles, what would change them) kept beside the harness.
  const notes = join(ROOT, 'bench/analysis.md');
  const profile = existsSync(notes) ? readFileSync(notes, 'utf8') : undefined;
  return {
    machine: describeMachine() + wakeNote,
    versions: await versions(ROOT, env.node),
    // When the measurements were made (the first of them), not when the page was written.
    date: minuteOf(measuredAt ?? new Date().toISOString()),
    command,
    notes: PROXIES.map((p) => ({ name: p.name, note: p.note })),
    ...(profile ? { profile } : {}),
  };
}

/**
 * Writes the pages of the scenarios that were run: docs/benchmarks.md for S1–S5 and
 * docs/bench-l4.md for S6/S7 and docs/bench-l3.md for S10, each with its charts, so a run of one
 * group leaves the other pages as they were.
 */
function writeDocs(lines: ResultLine[], info: Awaited<ReturnType<typeof docInfo>>, names: string[]): void {
  const dir = join(ROOT, 'docs/bench');
  mkdirSync(dir, { recursive: true });
  const http = lines.filter((l) => HTTP_SCENARIOS.includes(l.scenario));
  const l4 = lines.filter((l) => L4_SCENARIOS.includes(l.scenario));
  const l3 = lines.filter((l) => L3_SCENARIOS.includes(l.scenario));
  // The layer-4 and layer-3 pages take every run of a cell (see l4Page); their charts must agree.
  const charts = [...summarise(http, names), ...summarise(l4, names, false), ...summarise(l3, names, false)];
  for (const [sc, cells] of charts) writeFileSync(join(dir, `${sc}.svg`), svgChart(sc, cells));
  if (http.length > 0) {
    // Hand-written dated runs since the last full one: kept under the targets table.
    const datedFile = join(ROOT, 'bench/dated-runs.md');
    const dated = existsSync(datedFile) ? readFileSync(datedFile, 'utf8') : undefined;
    writeFileSync(
      join(ROOT, 'docs/benchmarks.md'),
      page(http, { ...info, ...(dated ? { dated } : {}) }, names),
    );
    log('wrote docs/benchmarks.md');
  }
  if (l4.length > 0) {
    // Hand-written findings for the layer-4 page (profiles, what would change them).
    const notes = join(ROOT, 'bench/analysis-l4.md');
    const profile = existsSync(notes) ? readFileSync(notes, 'utf8') : undefined;
    writeFileSync(
      join(ROOT, 'docs/bench-l4.md'),
      l4Page(l4, { ...info, ...(profile ? { profile } : {}) }, names),
    );
    log('wrote docs/bench-l4.md');
  }
  if (l3.length > 0) {
    // Hand-written findings for the layer-3 page (where the CPU goes, what would change it).
    const notes = join(ROOT, 'bench/analysis-l3.md');
    const profile = existsSync(notes) ? readFileSync(notes, 'utf8') : undefined;
    writeFileSync(join(ROOT, 'docs/bench-l3.md'), l3Page(l3, { ...info, profile }, names));
    log('wrote docs/bench-l3.md');
  }
}

async function main(): Promise<void> {
  if (values.help) {
    process.stdout.write(
      readFileSync(fileURLToPath(import.meta.url), 'utf8')
        .split('*/')[0]!
        .replace(/^\/\*\*|^ \* ?/gm, ''),
    );
    return;
  }
  installCleanup();
  const work = join(ROOT, 'bench/.work');
  mkdirSync(work, { recursive: true });
  const env: BenchEnv = {
    root: ROOT,
    work,
    upstream: `127.0.0.1:${UPSTREAM_PORT}`,
    udpEcho: `127.0.0.1:${UDP_ECHO_PORT}`,
    dns: `127.0.0.1:${DNS_PORT}`,
    node: process.execPath,
    oxyEnv: values['cpu-prof'] ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${join(work, 'prof')}` } : {},
  };
  const names = PROXIES.map((p) => p.name);

  if (values.report) {
    const lines = readFileSync(values.report, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as ResultLine);
    writeDocs(lines, await docInfo(env, values.command ?? 'npm run bench', lines[0]?.time), names);
    return;
  }

  const scenarios = pick(positionals[0], SCENARIOS, 'scenario');
  const proxies = pick(positionals[1], names, 'proxy').map((n) => PROXIES.find((p) => p.name === n)!);
  const runs = Number(values.runs ?? (values.quick ? 1 : 3));
  const docs = values.docs || (!values['no-docs'] && !values.quick && !positionals[0] && !positionals[1]);

  // Set-up: a proxy whose package cannot be installed is unavailable, the rest go on.
  const missing = await ensureApt([...TOOL_PACKAGES, ...proxies.flatMap((p) => (p.apt ? [p.apt] : []))], log);
  const unavailable = new Map<string, string>();
  for (const p of proxies)
    if (p.apt && missing.has(p.apt)) unavailable.set(p.name, `${p.apt} did not install`);
  if (proxies.some((p) => p.name === 'proxy-chain' || p.name === 'http-proxy')) {
    if (!(await ensureNpmPeers(ROOT, log))) {
      unavailable.set('proxy-chain', 'npm install failed');
      unavailable.set('http-proxy', 'npm install failed');
    }
  }
  const connload = await buildConnload(ROOT, work);
  const docroot = ensureDocroot();
  const upstream = await startUpstream(env, UPSTREAM_PORT, docroot);
  const senv: ScenarioEnv = {
    root: ROOT,
    work,
    node: env.node,
    connload,
    upstream: env.upstream,
    udpEcho: env.udpEcho,
    dns: env.dns,
    upstreamPid: upstream.proc.pid,
    quick: values.quick,
    pin: values.pin,
  };
  if (values.pin) {
    pinTree(process.pid, '0');
    pinTree(upstream.proc.pid, '0');
  }
  const udpPeers = scenarios.some((s) => s.startsWith('S7') || s.startsWith('S11'))
    ? await startUdpPeers(env, UDP_ECHO_PORT, DNS_PORT)
    : null;
  const tlsOrigin = scenarios.some((s) => s.startsWith('S8')) ? await startTlsOrigin(env, docroot) : null;
  const resultsFile = join(work, `results-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`);
  log(`results go to ${resultsFile}`);
  const wake = await wakeRoundTrip();
  const placement = describePlacement(await wakePlacement(await buildTool(ROOT, work, 'wake-placement')));
  wakeNote = `; a cross-thread wake-up round trip (futex ping-pong) ${wake.medianUs.toFixed(1)} µs median, p90 ${wake.p90Us.toFixed(1)} µs; ${placement}; load ${(loadavg()[0] ?? 0).toFixed(1)}`;
  log(`this machine:${wakeNote.slice(1)}`);

  const lines: ResultLine[] = [];
  const unsupported = new Set<string>();
  const emit = (l: ResultLine) => {
    lines.push(l);
    const text = JSON.stringify(l);
    process.stdout.write(`${text}\n`);
    appendFileSync(resultsFile, `${text}\n`);
  };

  /** Starts `proxy` for `sc` on its port (on CPU 1 with `--pin`). */
  const startOne = async (proxy: ProxyDef, sc: Scenario): Promise<Running> => {
    const running = await proxy.start!(env, FIRST_PROXY_PORT + PROXIES.indexOf(proxy), sc);
    if (values.pin) pinTree(running.proc.pid, '1');
    return running;
  };
  /** A measured line: the figures with the load average, and how much other work ran meanwhile. */
  const measured = (cpu: { foreign: number }, figures: Figures) => ({
    status: 'ok' as const,
    foreign_cpu: round(cpu.foreign),
    busy: cpu.foreign > BUSY_THRESHOLD,
    // The load average beside every figure: the machine is shared with other work.
    figures: roundAll({ ...figures, load1: loadavg()[0] ?? 0 }),
  });
  /** A failed measurement's line: its status and the error's first line. */
  const failed = (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    const status = err instanceof Unsupported ? ('unsupported' as const) : ('error' as const);
    return { status, foreign_cpu: 0, busy: false, error: message.split('\n')[0] ?? message };
  };

  const measure = async (sc: Scenario, proxy: ProxyDef, run: number): Promise<ResultLine> => {
    const base = { scenario: sc, proxy: proxy.name, run, time: new Date().toISOString() };
    let running: Running | undefined;
    try {
      if (proxy.start) running = await startOne(proxy, sc);
      // Wait (a little) for a quiet machine before starting the clock; not worth it for --quick.
      for (let i = 0; i < 2 && !values.quick && (await foreignLoad(1000)) > BUSY_THRESHOLD; i++) {
        log('the machine is busy with other work; waiting 3 s');
        await sleep(3000);
      }
      const watch = new CpuWatch();
      const addr = running?.addr ?? null;
      const pid = running?.proc.pid ?? null;
      let figures: Figures;
      if (sc === 'S1') figures = await runS1(senv, addr, pid);
      else if (sc === 'S2') figures = await runS2(senv, addr);
      else if (sc === 'S3') figures = await runS3(senv, addr, pid);
      else if (sc === 'S4') figures = await runS4(senv, addr, pid);
      else if (sc === 'S5') figures = await runS5(senv, addr);
      else if (sc === 'S9') figures = await runS9(senv, addr, pid);
      else if (sc === 'S6a') figures = await runS6a(senv, addr, pid);
      else if (sc === 'S6b') figures = await runS6b(senv, addr, pid);
      else if (sc === 'S10a') figures = await runS10a(senv, addr, pid);
      else if (sc === 'S10b') figures = await runS10b(senv, addr, pid);
      else if (sc === 'S8a' || sc === 'S8b') figures = await runS8(senv, sc, proxy.name, addr, pid);
      else if (sc === 'S11a' || sc === 'S11b') figures = await runS11(senv, sc, addr, pid);
      else figures = await runS7(senv, sc, addr, pid);
      return { ...base, ...measured(watch.stop(), figures) };
    } catch (err) {
      return { ...base, ...failed(err) };
    } finally {
      if (running) await stopProcess(running.proc);
    }
  };

  /** `--side-by-side`: `subject` and `peer` started together and measured at the same time. */
  const measureBeside = async (
    sc: SideBySideScenario,
    subject: ProxyDef,
    peer: ProxyDef,
    run: number,
  ): Promise<ResultLine[]> => {
    const base = { scenario: sc, run, time: new Date().toISOString() };
    const pair = [
      { proxy: subject.name, beside: peer.name },
      { proxy: peer.name, beside: subject.name },
    ] as const;
    const running: Running[] = [];
    try {
      for (const p of [subject, peer]) running.push(await startOne(p, sc));
      const [a, b] = running.map((r) => ({ addr: r.addr, pid: r.proc.pid })) as [Started, Started];
      const watch = new CpuWatch();
      const figures = await measurePair(senv, sc, a, b, run % 2 === 0);
      const cpu = watch.stop();
      return pair.map((names, i) => ({ ...base, ...names, ...measured(cpu, figures[i] as Figures) }));
    } catch (err) {
      return pair.map((names) => ({ ...base, ...names, ...failed(err) }));
    } finally {
      for (const r of running) await stopProcess(r.proc);
    }
  };

  /** Runs `subject` beside each of `peers` in each of `scs` (those side-by-side.ts can run). */
  const runPairs = async (scs: readonly Scenario[], subject: ProxyDef, peers: readonly ProxyDef[]) => {
    for (let run = 1; run <= runs; run++)
      for (const sc of scs) {
        if (!(SIDE_BY_SIDE_SCENARIOS as readonly string[]).includes(sc)) {
          if (run === 1) log(`--side-by-side: ${sc} skipped (only ${SIDE_BY_SIDE_SCENARIOS.join(', ')})`);
          continue;
        }
        for (const peer of peers) {
          if (!peer.start || unavailable.has(peer.name)) continue;
          if (!peer.scenarios.includes(sc) || !subject.scenarios.includes(sc)) continue;
          log(`run ${run}/${runs} ${sc} ${subject.name} beside ${peer.name}`);
          for (const l of await measureBeside(sc as SideBySideScenario, subject, peer, run)) emit(l);
        }
      }
  };
  const pairSummary = (subject: string) =>
    `\n### Side by side (connections or tunnels/s, medians)\n\n${pairTable(summarisePairs(lines, subject))}\n`;

  const started = Date.now();
  if (values['side-by-side']) {
    const [subject, ...peers] = proxies;
    if (!subject?.start) {
      log('--side-by-side: the first proxy must be one the bench starts (not direct)');
      process.exit(2);
    }
    await runPairs(scenarios, subject, peers);
    for (const p of [upstream, udpPeers, tlsOrigin]) if (p) await stopProcess(p.proc);
    log(`done in ${Math.round((Date.now() - started) / 1000)} s`);
    process.stdout.write(pairSummary(subject.name));
    return;
  }
  for (let run = 1; run <= runs; run++) {
    const retry: [Scenario, ProxyDef][] = [];
    for (const sc of scenarios) {
      // Rotate the order each run so no proxy always goes first (or right after a heavy one).
      const order = proxies.map((_, i) => proxies[(i + run - 1) % proxies.length]!);
      for (const proxy of order) {
        if (!proxy.scenarios.includes(sc)) continue;
        const key = `${sc}/${proxy.name}`;
        if (unavailable.has(proxy.name)) {
          if (run === 1)
            emit({
              scenario: sc,
              proxy: proxy.name,
              run,
              time: new Date().toISOString(),
              status: 'unavailable',
              foreign_cpu: 0,
              busy: false,
              error: unavailable.get(proxy.name)!,
            });
          continue;
        }
        if (unsupported.has(key)) continue;
        log(`run ${run}/${runs} ${sc} ${proxy.name}`);
        const line = await measure(sc, proxy, run);
        emit(line);
        if (line.status === 'unsupported') unsupported.add(key);
        if (line.status === 'error' && /exited before listening|nothing listens/.test(line.error ?? '')) {
          unavailable.set(proxy.name, `does not start: ${line.error}`);
        }
        if (line.busy) retry.push([sc, proxy]);
      }
    }
    // A machine busy for most of the run will not get quiet by waiting: repeat only the few.
    const measured = lines.filter((l) => l.run === run && l.status === 'ok').length;
    if (retry.length > measured / 2) {
      log(
        `run ${run}: ${retry.length} of ${measured} measurements were busy; the machine is shared, not repeating them`,
      );
      retry.length = 0;
    }
    for (const [sc, proxy] of retry) {
      log(`repeating the busy run ${run} of ${sc} ${proxy.name}`);
      emit(await measure(sc, proxy, run));
    }
  }
  // S6b's peers are single-threaded like Oxy's loop, so a full run also measures them side by
  // side with Oxy (bench/lib/side-by-side.ts): the same minute of the machine for both.
  const oxy = proxies.find((p) => p.name === 'oxy');
  const s6bPeers = proxies.filter((p) => p.name === 'haproxy-tcp' || p.name === 'nginx-stream');
  const pairs = !values.quick && !values.pin && scenarios.includes('S6b') && oxy && s6bPeers.length > 0;
  if (pairs) await runPairs(['S6b'], oxy, s6bPeers);
  await stopProcess(upstream.proc);
  if (udpPeers) await stopProcess(udpPeers.proc);
  if (tlsOrigin) await stopProcess(tlsOrigin.proc);
  log(`done in ${Math.round((Date.now() - started) / 1000)} s`);

  const shown = proxies.map((p) => p.name);
  for (const [sc, cells] of summarise(lines, shown)) {
    process.stdout.write(
      `\n### ${METRICS[sc].title} (${METRICS[sc].unit}, medians)\n\n${table(sc, cells)}\n`,
    );
  }
  if (pairs) process.stdout.write(pairSummary('oxy'));
  const s9 = summarise(lines, shown).get('S9');
  if (s9 !== undefined) process.stdout.write(`\n${s9Ratios(s9)}\n`);
  if (docs) {
    const args = process.argv.slice(2).join(' ');
    writeDocs(lines, await docInfo(env, `npm run bench${args ? ` -- ${args}` : ''}`, lines[0]?.time), shown);
  }
}

/** S9's point: the counting body hook's throughput against the same transfer without it. */
function s9Ratios(cells: readonly { proxy: string; med: Record<string, number> }[]): string {
  const by = (p: string) => cells.find((c) => c.proxy === p)?.med;
  const body = by('oxy-body');
  const out = ['S9 ratios (target: oxy-body at least 0.7× the same transfer without the hook):'];
  for (const peer of ['oxy-head', 'oxy']) {
    const other = by(peer);
    if (body?.primary !== undefined && other?.primary)
      out.push(
        `  oxy-body / ${peer}: ${(body.primary / other.primary).toFixed(2)}× throughput; CPU ${fmtS(body.cpu_s_per_gib)} vs ${fmtS(other.cpu_s_per_gib)} s/GiB`,
      );
  }
  out.push(`  load average (1 min): ${(loadavg()[0] ?? 0).toFixed(2)}`);
  return out.join('\n');
}

function fmtS(x: number | undefined): string {
  return x === undefined ? '–' : x.toFixed(2);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function roundAll(f: Figures): Figures {
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(f)) out[k] = typeof v === 'number' ? round(v) : v;
  return out as Figures;
}

/**
 * Two harness runs at once would fight over the fixed ports and each other's CPU, so a run holds
 * an exclusive flock(2) on /tmp/oxy-bench.lock and a second one waits. flock(1) takes the lock on
 * our own open descriptor (passed as its fd 3), so the lock stays with this process until it exits.
 */
function takeLock(): void {
  const fd = openSync('/tmp/oxy-bench.lock', 'a');
  const stdio: StdioOptions = ['ignore', 'inherit', 'inherit', fd];
  if (spawnSync('flock', ['-n', '-x', '3'], { stdio }).status === 0) return;
  log('another benchmark run holds /tmp/oxy-bench.lock; waiting for it to finish');
  spawnSync('flock', ['-x', '3'], { stdio });
}

if (!existsSync(join(ROOT, 'node_modules/node')))
  log('warning: the pinned Node.js is missing; run npm ci first');
if (!values.report && !values.help) takeLock();
await main();
process.exit(0);
