/**
 * Reads a V8 .cpuprofile (from `node --cpu-prof`, `npm run bench -- S1 oxy --cpu-prof`, or the
 * telemetry server's CPU profile) and prints where the time goes: self time per function, self
 * time per file (grouped by package), and inclusive time of the heaviest frames. The numbers say
 * what to optimise first; reading a flame graph by eye on a 2-core machine is slower.
 *
 *   node bench/tools/cpuprofile-top.ts FILE.cpuprofile [--top 25]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' } },
});
if (!positionals[0]) {
  process.stderr.write('usage: cpuprofile-top.ts FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);
const prof = JSON.parse(readFileSync(positionals[0], 'utf8')) as Profile;

const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node: each sample's delta belongs to the node that was on top.
const self = new Map<number, number>();
prof.samples.forEach((id, i) => {
  self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);

/** Short place of a frame: package or file relative to the repository. */
function place(url: string): string {
  if (!url) return '(native/V8)';
  if (url.startsWith('node:')) return url;
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0)
    return url
      .slice(nm + 13)
      .split('/')
      .slice(0, url.slice(nm + 13).startsWith('@') ? 2 : 1)
      .join('/');
  const pk = url.indexOf('/packages/');
  return pk >= 0 ? url.slice(pk + 1) : url;
}
function label(n: Node): string {
  const f = n.callFrame;
  return `${f.functionName || '(anonymous)'} ${place(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
}

function tally(key: (n: Node) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const [id, t] of self) {
    const k = key(byId.get(id)!);
    m.set(k, (m.get(k) ?? 0) + t);
  }
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
}

// Inclusive time per label: a sample counts once for every distinct label on its stack.
const incl = new Map<string, number>();
for (const [id, t] of self) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (seen.has(l)) continue;
    seen.add(l);
    incl.set(l, (incl.get(l) ?? 0) + t);
  }
}

const pct = (t: number) => `${((t / total) * 100).toFixed(1).padStart(5)} %`;
const print = (title: string, rows: [string, number][]) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, t] of rows.slice(0, top)) process.stdout.write(`${pct(t)}  ${k}\n`);
};
process.stdout.write(`profile: ${(total / 1e6).toFixed(2)} s sampled, ${prof.samples.length} samples\n`);
print(
  'self time by file or package',
  tally((n) => place(n.callFrame.url)),
);
print('self time by function', tally(label));
print(
  'inclusive time (frames below the event loop)',
  [...incl.entries()].sort((a, b) => b[1] - a[1]).filter(([k]) => !k.startsWith('(root)')),
);
