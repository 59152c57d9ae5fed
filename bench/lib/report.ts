/**
 * From result lines to what people read: medians per (scenario, proxy), a markdown table per
 * scenario, an SVG bar chart per scenario, and docs/benchmarks.md. Everything here is a pure
 * function of the result lines, so `npm run bench -- --report results.jsonl` regenerates the page.
 */

import { SCENARIOS, type Scenario } from './proxies.ts';
import { METRICS } from './scenarios.ts';

/** One JSON line the harness prints per measurement. */
export interface ResultLine {
  scenario: Scenario;
  proxy: string;
  run: number;
  status: 'ok' | 'unsupported' | 'error' | 'unavailable';
  /** Foreign CPU share during the run (0..1); `busy` when above the threshold. */
  foreign_cpu: number;
  busy: boolean;
  time: string;
  error?: string;
  figures?: Record<string, number | string | boolean>;
  /** `--side-by-side`: the proxy that ran at the same time (bench/lib/side-by-side.ts). */
  beside?: string;
}

/** Median of a list of numbers (NaN when empty). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The medians of one (scenario, proxy) cell. */
export interface Cell {
  proxy: string;
  status: ResultLine['status'];
  runs: number;
  busyRuns: number;
  /** Median of each numeric figure. */
  med: Record<string, number>;
  note?: string;
}

/**
 * Medians per scenario and proxy. A cell uses only the runs on a quiet machine when it has at
 * least three (busy runs were repeated), and all its runs otherwise, saying how many were busy:
 * a median of one lucky quiet run would be less honest than a median of three noisy ones.
 * With `preferQuiet` false every cell uses all its runs (for a run where most were busy, so that
 * cells of the same table are not medians of different conditions).
 */
export function summarise(
  lines: readonly ResultLine[],
  proxies: readonly string[],
  preferQuiet = true,
): Map<Scenario, Cell[]> {
  const out = new Map<Scenario, Cell[]>();
  for (const sc of SCENARIOS) {
    const cells: Cell[] = [];
    for (const proxy of proxies) {
      // A side-by-side line (`beside`) had half the load and a neighbour: not one of the cell's runs.
      const mine = lines.filter((l) => l.scenario === sc && l.proxy === proxy && l.beside === undefined);
      if (mine.length === 0) continue;
      const ok = mine.filter((l) => l.status === 'ok');
      const quiet = ok.filter((l) => !l.busy);
      const use = preferQuiet && quiet.length >= 3 ? quiet : ok;
      const med: Record<string, number> = {};
      for (const key of Object.keys(use[0]?.figures ?? {})) {
        const vals = use.map((l) => l.figures?.[key]).filter((v): v is number => typeof v === 'number');
        if (vals.length > 0) med[key] = median(vals);
      }
      const bad = mine.find((l) => l.status !== 'ok');
      cells.push({
        proxy,
        status: use.length > 0 ? 'ok' : (bad?.status ?? 'error'),
        runs: use.length,
        busyRuns: use.filter((l) => l.busy).length,
        med,
        ...(use.length === 0 && bad?.error ? { note: bad.error } : {}),
      });
    }
    if (cells.length > 0) out.set(sc, cells);
  }
  return out;
}

function fmt(x: number | undefined, digits = 1): string {
  if (x === undefined || Number.isNaN(x)) return '–';
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(digits);
}

function L4_UDP_COLUMNS(
  key: string,
  head: string,
  unit: string,
): { key: string; head: string; digits?: number }[] {
  return [
    { key, head },
    { key: `cpu_us_per_${unit}`, head: `CPU µs/${unit}`, digits: 2 },
    { key: `js_us_per_${unit}`, head: `JS thread µs/${unit}`, digits: 2 },
    { key: `reactor_us_per_${unit}`, head: `reactor µs/${unit}`, digits: 2 },
    {
      key: unit === 'query' ? 'bad' : 'restarts',
      head: unit === 'query' ? 'bad answers' : 'loop restarts',
      digits: 0,
    },
    { key: 'load1', head: 'load avg', digits: 1 },
  ];
}

const COLUMNS: Record<Scenario, { key: string; head: string; digits?: number }[]> = {
  S1: [
    { key: 'rps', head: 'requests/s' },
    { key: 'p50_ms', head: 'p50 ms', digits: 2 },
    { key: 'p99_ms', head: 'p99 ms', digits: 2 },
    { key: 'p99_measured_ms', head: 'measured p99 ms', digits: 2 },
    { key: 'cpu_us_per_req', head: 'CPU µs/request', digits: 1 },
    { key: 'vcsw_per_req', head: 'sleeps/request', digits: 2 },
    { key: 'errors', head: 'errors', digits: 0 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S2: [{ key: 'gbit_per_s', head: 'Gbit/s', digits: 2 }],
  S9: [
    { key: 'gbit_per_s', head: 'Gbit/s', digits: 2 },
    { key: 'cpu_s_per_gib', head: 'proxy CPU s/GiB', digits: 2 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S3: [
    { key: 'tunnels_per_s', head: 'tunnels/s' },
    { key: 'setup_p50_ms', head: 'setup p50 ms', digits: 2 },
    { key: 'setup_p99_ms', head: 'setup p99 ms', digits: 2 },
    { key: 'client_us_per_tunnel', head: 'client µs/tunnel', digits: 1 },
    { key: 'upstream_us_per_tunnel', head: 'upstream µs/tunnel', digits: 1 },
    { key: 'errors', head: 'errors', digits: 0 },
  ],
  S4: [
    { key: 'kib_per_tunnel', head: 'KiB/tunnel', digits: 1 },
    { key: 'pss_before_mib', head: 'PSS before MiB', digits: 1 },
    { key: 'pss_after_mib', head: 'PSS after MiB', digits: 1 },
  ],
  S5: [{ key: 'gbit_per_s', head: 'Gbit/s', digits: 2 }],
  S6a: [
    { key: 'gbit_per_s', head: 'Gbit/s', digits: 2 },
    { key: 'cpu_s_per_gib', head: 'CPU s/GiB', digits: 2 },
    { key: 'js_s_per_gib', head: 'JS thread s/GiB', digits: 2 },
    { key: 'reactor_s_per_gib', head: 'reactor s/GiB', digits: 2 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S6b: [
    { key: 'conns_per_s', head: 'connections/s' },
    { key: 'cpu_us_per_conn', head: 'CPU µs/conn', digits: 1 },
    { key: 'js_us_per_conn', head: 'JS thread µs/conn', digits: 1 },
    { key: 'reactor_us_per_conn', head: 'reactor µs/conn', digits: 1 },
    { key: 'js_csw_per_conn', head: 'JS switches/conn', digits: 2 },
    { key: 'reactor_csw_per_conn', head: 'reactor switches/conn', digits: 2 },
    { key: 'client_us_per_conn', head: 'client µs/conn', digits: 1 },
    { key: 'upstream_us_per_conn', head: 'upstream µs/conn', digits: 1 },
    { key: 'connect_p99_ms', head: 'connect p99 ms', digits: 2 },
    { key: 'errors', head: 'errors', digits: 0 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S7a: L4_UDP_COLUMNS('datagrams_per_s', 'datagrams/s', 'datagram'),
  S7b: L4_UDP_COLUMNS('datagrams_per_s', 'datagrams/s', 'datagram'),
  S7c: L4_UDP_COLUMNS('queries_per_s', 'queries/s', 'query'),
  S10a: [
    { key: 'gbit_per_s', head: 'Gbit/s', digits: 2 },
    { key: 'cores_per_gbps', head: 'cores per Gbit/s', digits: 2 },
    { key: 'js_cores_per_gbps', head: 'JS thread', digits: 2 },
    { key: 'reactor_cores_per_gbps', head: 'reactor', digits: 2 },
    { key: 'other_cores_per_gbps', head: 'other (GC)', digits: 2 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S10b: [
    { key: 'flows_per_s', head: 'flows/s' },
    { key: 'cpu_us_per_flow', head: 'CPU µs/flow', digits: 1 },
    { key: 'js_us_per_flow', head: 'JS thread µs/flow', digits: 1 },
    { key: 'reactor_us_per_flow', head: 'reactor µs/flow', digits: 1 },
    { key: 'connect_p99_ms', head: 'connect p99 ms', digits: 2 },
    { key: 'errors', head: 'errors', digits: 0 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S8a: [
    { key: 'rate', head: 'requests/s' },
    { key: 'cpu_us_per_request', head: 'CPU µs/request', digits: 1 },
    { key: 'errors', head: 'errors', digits: 0 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S8b: [
    { key: 'rate', head: 'tunnels/s' },
    { key: 'cpu_us_per_tunnel', head: 'CPU µs/tunnel', digits: 1 },
    { key: 'errors', head: 'errors', digits: 0 },
    { key: 'load1', head: 'load avg', digits: 1 },
  ],
  S11a: L4_UDP_COLUMNS('datagrams_per_s', 'datagrams/s', 'datagram'),
  S11b: L4_UDP_COLUMNS('datagrams_per_s', 'datagrams/s', 'datagram'),
};

/** Columns of Oxy's CPU split by thread (threads.ts). */
const THREAD_SPLIT = /^(js|reactor)_/;

/** The markdown table of one scenario, best first, with each row as a share of "direct". */
export function table(sc: Scenario, cells: readonly Cell[]): string {
  const m = METRICS[sc];
  const cols = COLUMNS[sc];
  const direct = cells.find((c) => c.proxy === 'direct' && c.status === 'ok')?.med.primary;
  const ranked = [...cells].sort((a, b) => {
    const x = a.status === 'ok' ? a.med.primary! : Number.NaN;
    const y = b.status === 'ok' ? b.med.primary! : Number.NaN;
    if (Number.isNaN(x)) return 1;
    if (Number.isNaN(y)) return -1;
    return m.higherIsBetter ? y - x : x - y;
  });
  const head = ['proxy', ...cols.map((c) => c.head), ...(direct ? ['% of direct'] : []), 'runs'];
  const rows = ranked.map((c) => {
    if (c.status !== 'ok') {
      return [
        c.proxy,
        `${c.status}${c.note ? `: ${c.note.slice(0, 80)}` : ''}`,
        ...cols.slice(1).map(() => ''),
        ...(direct ? [''] : []),
        '0',
      ];
    }
    const share = direct && c.proxy !== 'direct' ? `${((c.med.primary! / direct) * 100).toFixed(0)} %` : '';
    return [
      c.proxy.startsWith('oxy') ? `**${c.proxy}**` : c.proxy,
      // Oxy's per-thread split means nothing for a single-threaded peer: its total says it all.
      ...cols.map((col) =>
        THREAD_SPLIT.test(col.key) && !c.proxy.startsWith('oxy') ? '–' : fmt(c.med[col.key], col.digits),
      ),
      ...(direct ? [share] : []),
      `${c.runs}${c.busyRuns ? ` (${c.busyRuns} busy)` : ''}`,
    ];
  });
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar chart of one scenario's medians, as a standalone SVG document. */
export function svgChart(sc: Scenario, cells: readonly Cell[]): string {
  const m = METRICS[sc];
  const ok = cells
    .filter((c) => c.status === 'ok' && Number.isFinite(c.med.primary))
    .sort((a, b) => (m.higherIsBetter ? b.med.primary! - a.med.primary! : a.med.primary! - b.med.primary!));
  const rowH = 26;
  const left = 130;
  const width = 640;
  const barMax = width - left - 90;
  const top = 44;
  const height = top + ok.length * rowH + 16;
  const max = Math.max(...ok.map((c) => c.med.primary!), 1e-9);
  const bars = ok.map((c, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, (c.med.primary! / max) * barMax);
    const colour = c.proxy.startsWith('oxy') ? '#d9480f' : c.proxy === 'direct' ? '#868e96' : '#4263eb';
    return [
      `<text x="${left - 8}" y="${y + 16}" text-anchor="end">${esc(c.proxy)}</text>`,
      `<rect x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${colour}"/>`,
      `<text x="${(left + w + 6).toFixed(1)}" y="${y + 16}">${fmt(c.med.primary, 2)}</text>`,
    ].join('');
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="20" font-weight="bold">${esc(m.title)}</text>
<text x="10" y="36" fill="#555">${esc(m.unit)}, median of runs; ${m.higherIsBetter ? 'longer is better' : 'shorter is better'}</text>
${bars.join('\n')}
</svg>
`;
}

/** The issue's targets for Oxy (one worker), judged against the peers of the same run. */
const TARGETS: Record<
  Scenario,
  { goal: string; ok: (oxy: Cell, peers: Cell[], direct?: Cell) => boolean } | undefined
> = {
  S1: {
    goal: '≥ 32,000 requests/s, p99 < 5 ms, ahead of every forward proxy',
    ok: (o, peers) =>
      o.med.rps! >= 32000 &&
      o.med.p99_ms! < 5 &&
      peers.every((p) => (!FIXED.has(p.proxy) ? o.med.rps! > p.med.rps! : true)),
  },
  S2: {
    goal: '≥ 9 Gbit/s, ahead of squid (then 90 % of direct)',
    ok: (o, peers) =>
      o.med.gbit_per_s! >= 9 &&
      o.med.gbit_per_s! > (peers.find((p) => p.proxy === 'squid')?.med.gbit_per_s ?? 0),
  },
  S3: { goal: '≥ 10,000 tunnels/s', ok: (o) => o.med.tunnels_per_s! >= 10000 },
  S4: { goal: '≤ 6 KiB per idle tunnel', ok: (o) => o.med.kib_per_tunnel! <= 6 },
  S5: undefined,
  // Judged between Oxy's own rows (oxy-body against oxy-head and oxy), printed after the tables.
  S9: undefined,
  S6a: { goal: '≥ 1.0× the better of haproxy-tcp and nginx-stream', ok: (o, peers) => atLeast(o, peers, 1) },
  S6b: { goal: '≥ 1.0× the better of haproxy-tcp and nginx-stream', ok: (o, peers) => atLeast(o, peers, 1) },
  S7a: { goal: '≥ 1.5× nginx-stream', ok: (o, peers) => atLeast(o, peers, 1.5) },
  S7b: { goal: '≥ 1.5× nginx-stream', ok: (o, peers) => atLeast(o, peers, 1.5) },
  S7c: { goal: '≥ 1.5× nginx-stream', ok: (o, peers) => atLeast(o, peers, 1.5) },
  S10a: { goal: '≥ 1.5 Gbit/s', ok: (o) => o.med.gbit_per_s! >= 1.5 },
  S10b: undefined,
  S8a: { goal: '≥ 5× mitmproxy', ok: (o, peers) => atLeast(o, peers, 5) },
  S8b: { goal: '≥ 5× mitmproxy', ok: (o, peers) => atLeast(o, peers, 5) },
  S11a: undefined,
  S11b: undefined,
};

/** Oxy's primary figure is at least `factor` times every peer's (higher is better). */
function atLeast(oxy: Cell, peers: Cell[], factor: number): boolean {
  return peers.length > 0 && peers.every((p) => oxy.med.primary! >= factor * p.med.primary!);
}

/** Rows that are not forward proxies (a fixed upstream): the stretch goal of S1, not a rival. */
const FIXED = new Set(['nginx-fixed', 'haproxy-fixed']);

/** Oxy's figure beside each target, as an absolute and as a ratio to the best peer of the run. */
export function targetsTable(sums: Map<Scenario, Cell[]>): string {
  const rows: string[] = [
    '| scenario | target | oxy | best forward peer | oxy / best peer | oxy / direct | met |',
    '| --- | --- | ---: | --- | ---: | ---: | --- |',
  ];
  for (const [sc, cells] of sums) {
    const m = METRICS[sc];
    const oxy = cells.find((c) => c.proxy === 'oxy' && c.status === 'ok');
    const direct = cells.find((c) => c.proxy === 'direct' && c.status === 'ok');
    const peers = cells.filter(
      (c) => c.status === 'ok' && !c.proxy.startsWith('oxy') && c.proxy !== 'direct',
    );
    const rivals = peers.filter((c) => !FIXED.has(c.proxy));
    const best = [...rivals].sort((a, b) =>
      m.higherIsBetter ? b.med.primary! - a.med.primary! : a.med.primary! - b.med.primary!,
    )[0];
    const t = TARGETS[sc];
    const ratio = (a?: number, b?: number) => (a !== undefined && b ? `${(a / b).toFixed(2)}×` : '–');
    rows.push(
      `| ${sc} | ${t?.goal ?? 'none yet'} | ${oxy ? `${fmt(oxy.med.primary, 2)} ${m.unit}` : (cells.find((c) => c.proxy === 'oxy')?.status ?? 'not run')} | ${best ? `${best.proxy} ${fmt(best.med.primary, 2)}` : '–'} | ${ratio(oxy?.med.primary, best?.med.primary)} | ${ratio(oxy?.med.primary, direct?.med.primary)} | ${oxy && t ? (t.ok(oxy, peers, direct) ? 'yes' : '**no**') : '–'} |`,
    );
  }
  return rows.join('\n');
}

/** Everything docs/benchmarks.md needs besides the result lines. */
export interface PageInfo {
  machine: string;
  versions: Record<string, string>;
  date: string;
  command: string;
  notes: readonly { name: string; note: string }[];
  profile?: string;
  /** Hand-written dated runs since the last full run (bench/dated-runs.md), under the targets table. */
  dated?: string;
}

/**
 * The facts under a page's introduction: date, machine, and the measurements with how many were
 * busy; `cells` says how a cell chooses among them.
 */
export function runFacts(lines: readonly ResultLine[], info: PageInfo, cells = ''): string[] {
  const busy = lines.filter((l) => l.busy).length;
  return [
    `- Date: ${info.date}`,
    `- Machine: ${info.machine}`,
    `- Measurements: ${lines.length} (${busy} on a busy machine: more than 10 % of its CPU used by other processes during the run${cells})`,
    '',
  ];
}

/**
 * The body every page shares: the targets table when Oxy ran (with `targetsNote` and the
 * hand-written `dated` runs under it), then a section per scenario with its chart and table.
 */
export function scenarioSections(
  sums: Map<Scenario, Cell[]>,
  targetsNote?: string,
  dated?: string,
): string[] {
  const out: string[] = [];
  if ([...sums.values()].some((cells) => cells.some((c) => c.proxy === 'oxy'))) {
    out.push('## Oxy against the targets', '', targetsTable(sums), '');
    if (targetsNote !== undefined) out.push(targetsNote, '');
    if (dated !== undefined) out.push(dated.replace(/^<!--[\s\S]*?-->\s*/, '').trimEnd(), '');
  }
  for (const [sc, cells] of sums) {
    const m = METRICS[sc];
    out.push(
      `## ${m.title}`,
      '',
      `${m.what}. Ranked by ${m.unit}, ${m.higherIsBetter ? 'higher' : 'lower'} is better.`,
      '',
    );
    out.push(`![${m.title}](bench/${sc}.svg)`, '', table(sc, cells), '');
  }
  return out;
}

/**
 * The closing sections: what each proxy row runs (those `shown`; none when `shown` is null),
 * the software versions and the profile.
 */
export function aboutSections(info: PageInfo, shown: ((name: string) => boolean) | null): string[] {
  const out: string[] = [];
  if (shown !== null) {
    out.push('## The proxies', '', '| row | what runs |', '| --- | --- |');
    for (const n of info.notes) if (shown(n.name)) out.push(`| ${n.name} | ${n.note} |`);
    out.push('');
  }
  out.push('## Versions', '', '| software | version |', '| --- | --- |');
  for (const [k, v] of Object.entries(info.versions)) out.push(`| ${k} | ${v} |`);
  if (info.profile) out.push('', info.profile.trim());
  return out;
}

/** The whole docs/benchmarks.md page. Charts are referenced as bench/<scenario>.svg beside it. */
export function page(lines: readonly ResultLine[], info: PageInfo, proxies: readonly string[]): string {
  const sums = summarise(lines, proxies);
  const out: string[] = [
    '# Benchmarks',
    '',
    '<!-- Generated by `npm run bench` (bench/run.ts); edit the harness, not this page. -->',
    '',
    `Oxy against real forward proxies on one machine, reproduced with \`${info.command}\`.`,
    'Every proxy runs with one worker on loopback against the same upstream (nginx serving files',
    'from tmpfs, keep-alive on); the "direct" row is the client talking to the upstream with no',
    'proxy, the limit of the machine. Each figure is the median of the runs listed, interleaved',
    'across proxies. Absolute figures drift 20–30 % between runs and machines: compare rows of the',
    'same run, not with other pages.',
    '',
    ...runFacts(
      lines,
      info,
      '; a cell uses only quiet runs when it has three of them, otherwise all its runs, and says how many were busy',
    ),
  ];
  out.push(
    'The layer-4 scenarios (S6, a `tcp` endpoint; S7, a `udp` endpoint) against HAProxy and nginx',
    '`stream` have their own page, [bench-l4.md](bench-l4.md).',
    '',
  );
  out.push(
    ...scenarioSections(
      sums,
      'For S4 lower is better, so a ratio below 1× is ahead of the peer.',
      info.dated,
    ),
    ...aboutSections(info, (name) => proxies.includes(name)),
  );
  out.push(
    '',
    '## Reproducing',
    '',
    '```sh',
    'npm run bench                      # every scenario, every proxy, 3 runs each (about 20 min)',
    'npm run bench -- S1 oxy --quick    # one short run of one cell',
    'npm run bench -- all squid,oxy     # a subset of proxies',
    'npm run bench -- S6,S7 --docs      # the layer-4 scenarios only: writes docs/bench-l4.md',
    'npm run bench -- S1 oxy,trafficserver --pin   # S1 with no spare core: proxy alone on CPU 1, wrk and nginx on CPU 0',
    'npm run bench -- S6b oxy,haproxy-tcp,nginx-stream --side-by-side --runs 5   # S3 or S6b: oxy at the same time as each peer, the same minute for both',
    'BENCH_OXY_REF=/path/to/other/checkout npm run bench -- S1 oxy,oxy-ref   # before/after in one run',
    'node bench/tools/s4-heap.ts [--root /path/to/checkout]   # an idle S4 tunnel in the JS heap, by constructor',
    '```',
    '',
    'The harness installs what it lacks (Debian packages under the apt lock, the Node.js peers into',
    '`bench/node_modules`), builds `bench/tools/connload.c`, starts each proxy with the configuration',
    'in `bench/lib/proxies.ts`, and stops it by PID. Raw result lines are kept in `bench/.work/`; those of this page are `docs/bench/results.jsonl`.',
    '',
  );
  return out.join('\n');
}
