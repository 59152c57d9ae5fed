/**
 * `--side-by-side` (S3 and S6b): the first proxy of the list and each other one run at the same
 * time, each with a load generator of its own at half the sequential bench's load (32 in
 * flight), so that both see the same minute of the machine. The sequential bench gives each
 * proxy its own 10 s; on a shared virtual machine whose speed moves by a fifth from one minute
 * to the next (bench/analysis.md, "the machine's two states") that moves a run more than a
 * tenth's difference between proxies. Side by side, both get the machine's state of that
 * moment, and the scheduler shares the cores between the two as between any two services: the
 * one that spends less per connection carries more of them. Which proxy's load generator
 * starts first alternates run by run.
 *
 * What it cannot show: how a proxy does with the machine to itself, where the scheduler's
 * placement of its client and upstream also counts (bench/analysis-l4.md, S6b). The sequential
 * rows stay the scenario's figures; these are the same work measured where the machine's
 * drift cancels out.
 */
import { median, type ResultLine } from './report.ts';
import type { Figures, ScenarioEnv } from './scenarios.ts';
import {
  FIGURE_NAMES,
  IN_FLIGHT as SEQUENTIAL_IN_FLIGHT,
  SOURCES as SEQUENTIAL_SOURCES,
  shortConnections,
} from './short-conns.ts';

/** The scenarios that can run side by side: those of the connection load generator. */
export const SIDE_BY_SIDE_SCENARIOS = ['S3', 'S6b'] as const;
export type SideBySideScenario = (typeof SIDE_BY_SIDE_SCENARIOS)[number];

/** Per side: connections in flight and source addresses, half the sequential bench's. */
const IN_FLIGHT = SEQUENTIAL_IN_FLIGHT / 2;
const SOURCES = SEQUENTIAL_SOURCES / 2;

/** A proxy started for a pair: its address and PID. */
export interface Started {
  addr: string;
  pid: number;
}

/**
 * Measures `a` and `b`, already started, at the same time. Returns their figures in that order;
 * `swap` starts b's load generator first.
 */
export async function measurePair(
  env: ScenarioEnv,
  sc: SideBySideScenario,
  a: Started,
  b: Started,
  swap: boolean,
): Promise<[Figures, Figures]> {
  const sides = swap ? [b, a] : [a, b];
  const figures = await shortConnections(env, sc, sides, IN_FLIGHT, SOURCES);
  const [x, y] = figures as [Figures, Figures];
  return swap ? [y, x] : [x, y];
}

/** One row of the summary: a pair's medians over its runs. */
export interface PairRow {
  scenario: string;
  subject: string;
  peer: string;
  subjectRate: number;
  peerRate: number;
  /** Median, lowest and highest of the per-run ratios subject / peer. */
  ratio: number;
  low: number;
  high: number;
  subjectCpu: number;
  peerCpu: number;
  runs: number;
}

/**
 * The pairs of a side-by-side invocation: lines carry `beside` (the other proxy of the pair).
 * A run counts when both sides of it are `ok`.
 */
export function summarisePairs(lines: readonly ResultLine[], subject: string): PairRow[] {
  const rows: PairRow[] = [];
  const ok = lines.filter((l) => l.status === 'ok' && l.beside !== undefined && l.figures);
  const keys = new Set(ok.filter((l) => l.proxy !== subject).map((l) => `${l.scenario}\t${l.proxy}`));
  for (const key of keys) {
    const [scenario, peer] = key.split('\t') as [string, string];
    const runs: { s: Figures; p: Figures }[] = [];
    for (const p of ok.filter((l) => l.scenario === scenario && l.proxy === peer && l.beside === subject)) {
      const s = ok.find(
        (l) => l.scenario === scenario && l.proxy === subject && l.beside === peer && l.run === p.run,
      );
      if (s) runs.push({ s: s.figures as Figures, p: p.figures as Figures });
    }
    if (runs.length === 0) continue;
    const cpuKey = `cpu_us_per_${FIGURE_NAMES[scenario as SideBySideScenario].unit}`;
    const num = (f: Figures, k: string) => (typeof f[k] === 'number' ? (f[k] as number) : Number.NaN);
    const ratios = runs.map((r) => r.s.primary / r.p.primary);
    rows.push({
      scenario,
      subject,
      peer,
      subjectRate: median(runs.map((r) => r.s.primary)),
      peerRate: median(runs.map((r) => r.p.primary)),
      ratio: median(ratios),
      low: Math.min(...ratios),
      high: Math.max(...ratios),
      subjectCpu: median(runs.map((r) => num(r.s, cpuKey))),
      peerCpu: median(runs.map((r) => num(r.p, cpuKey))),
      runs: runs.length,
    });
  }
  return rows;
}

/** The markdown table of {@link summarisePairs}' rows. */
export function pairTable(rows: readonly PairRow[]): string {
  const n = (x: number) => (Number.isNaN(x) ? '–' : Math.round(x).toLocaleString('en-US'));
  const c = (x: number) => (Number.isNaN(x) ? '–' : x.toFixed(1));
  const out = [
    '| scenario | pair | rate, first | rate, second | first / second (median, lowest–highest) | CPU µs per connection, first / second | runs |',
    '| --- | --- | ---: | ---: | --- | --- | ---: |',
  ];
  for (const r of rows)
    out.push(
      `| ${r.scenario} | ${r.subject} beside ${r.peer} | ${n(r.subjectRate)} | ${n(r.peerRate)} | ${r.ratio.toFixed(2)}× (${r.low.toFixed(2)}–${r.high.toFixed(2)}) | ${c(r.subjectCpu)} / ${c(r.peerCpu)} | ${r.runs} |`,
    );
  return out.join('\n');
}
