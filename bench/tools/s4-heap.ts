/**
 * s4-heap: what an idle CONNECT tunnel (bench S4) is made of in Oxy's JS heap and resident memory.
 *
 * S4 reports PSS growth, which mixes the JS heap's free space before the tunnels (filled by
 * them, not counted), the young generation's size and malloc's arenas. This opens the same idle
 * tunnels (bench/tools/connload.c, `idle`) through an Oxy started for the purpose, takes a heap
 * snapshot (which collects garbage first) with the tunnels open and again once they closed, and
 * prints the difference by constructor: objects and bytes per tunnel. PSS growth as S4 counts
 * it (after a warm-up, before any snapshot) and the heap's size after a full GC are beside it.
 *
 *   node bench/tools/s4-heap.ts [--root DIR] [-n 5000] [--top 30] [--strings] [--tcp]
 *
 * `--root` is the checkout whose `oxy` runs (default this one; another checkout's node_modules
 * installed and addon built). `--tcp` measures an idle connection of a `tcp` endpoint with a
 * fixed target (S6's shape, reactor accept) instead, opened from this process. The upstream is a listener in this process that accepts and holds.
 * Needs bench/.work/connload (built by `npm run bench`). Loopback only; everything is stopped at
 * the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { treePss, waitForPort } from '../lib/procs.ts';

const here = resolve(import.meta.dirname, '../..');
const { values } = parseArgs({
  options: {
    root: { type: 'string', default: here },
    n: { type: 'string', short: 'n', default: '5000' },
    top: { type: 'string', default: '30' },
    /** A `tcp` endpoint to the upstream instead of CONNECT: idle connections this process opens. */
    tcp: { type: 'boolean', default: false },
    /** Strings by their text (digits as #), to see which a tunnel keeps. */
    strings: { type: 'boolean', default: false },
  },
});
const root = resolve(values.root as string);
const n = Number(values.n);
const connload = join(here, 'bench/.work/connload');
const dir = mkdtempSync(join(tmpdir(), 's4-heap-'));

/** A listener that accepts and holds every connection, silent. */
const held: net.Socket[] = [];
const upstream = net.createServer((s) => {
  held.push(s);
  s.on('error', () => {});
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
const upPort = (upstream.address() as net.AddressInfo).port;

const port = await freePort();
const cfg = join(dir, 'oxy.yaml');
writeFileSync(
  cfg,
  [
    'endpoints:',
    '  main:',
    `    addr: "127.0.0.1:${port}"`,
    ...(values.tcp ? ['    protocol: tcp', '    tcp:', `      target: "127.0.0.1:${upPort}"`] : []),
    'egress:',
    '  blocked_cidrs: []',
    'workers: 1',
    'restart:',
    `  socket: "${dir}/restart.sock"`,
    '',
  ].join('\n'),
);
const oxy = spawn(join(root, 'node_modules/.bin/oxy'), ['-c', cfg], {
  cwd: dir,
  env: { ...process.env, OXY_NODE_FLAGS: '--max-semi-space-size=8 --heapsnapshot-signal=SIGUSR2' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
try {
  await waitForPort('127.0.0.1', port, 15000);
  const warm = hold(200);
  await warm.settled;
  await sleep(500);
  await warm.stop();
  await sleep(1500);
  // PSS as S4 counts it, before any snapshot (writing one grows the process's malloc arenas).
  const pssA = treePss(oxy.pid as number);
  const tunnels = hold(n);
  const established = await tunnels.settled;
  await sleep(2000);
  const pssB = treePss(oxy.pid as number);
  const b = await measure('with the tunnels');
  await tunnels.stop();
  await sleep(2000);
  const a = await measure('after they closed');
  report(a, b, established, pssA, pssB);
} finally {
  oxy.kill('SIGTERM');
  upstream.close();
  for (const s of held) s.destroy();
  rmSync(dir, { recursive: true, force: true });
}

interface Measure {
  heap: number;
  byName: Map<string, { count: number; size: number }>;
}

async function measure(tag: string): Promise<Measure> {
  const before = new Set(readdirSync(dir));
  oxy.kill('SIGUSR2');
  let file = '';
  // The snapshot is written in one go; wait for a new file whose size stops changing.
  for (let i = 0; i < 600 && file === ''; i++) {
    await sleep(100);
    const f = readdirSync(dir).find((x) => x.endsWith('.heapsnapshot') && !before.has(x));
    if (f !== undefined) {
      try {
        JSON.parse(readFileSync(join(dir, f), 'utf8'));
        file = f;
      } catch {}
    }
  }
  if (file === '') throw new Error(`no heap snapshot (${tag})`);
  const snap = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  rmSync(join(dir, file));
  return aggregate(snap);
}

interface Snapshot {
  snapshot: {
    meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
  };
  nodes: number[];
  edges: number[];
  locations?: number[];
  strings: string[];
}

/** Bytes and counts by constructor; a closure by its name, file and line (where V8 says). */
function aggregate(snap: Snapshot): Measure {
  const meta = snap.snapshot.meta;
  const f = meta.node_fields;
  const types = meta.node_types[0];
  const width = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const iEdges = f.indexOf('edge_count');
  const ew = meta.edge_fields.length;
  const eType = meta.edge_fields.indexOf('type');
  const eName = meta.edge_fields.indexOf('name_or_index');
  const eTo = meta.edge_fields.indexOf('to_node');
  const edgeTypes = meta.edge_types[0];
  const firstEdge = new Uint32Array(snap.nodes.length / width + 1);
  for (let i = 0, e = 0; i < snap.nodes.length; i += width) {
    firstEdge[i / width] = e;
    e += (snap.nodes[i + iEdges] as number) * ew;
  }
  /** The node `name` edge of node index `n` points to (or -1). */
  const edgeTo = (n: number, name: string): number => {
    const from = firstEdge[n / width] as number;
    const count = snap.nodes[n + iEdges] as number;
    for (let e = from; e < from + count * ew; e += ew) {
      const t = edgeTypes[snap.edges[e + eType] as number];
      if ((t === 'internal' || t === 'property') && snap.strings[snap.edges[e + eName] as number] === name)
        return snap.edges[e + eTo] as number;
    }
    return -1;
  };
  const lineOf = new Map<number, number>();
  const loc = snap.locations ?? [];
  for (let i = 0; i < loc.length; i += 4) lineOf.set(loc[i] as number, (loc[i + 2] as number) + 1);
  const byName = new Map<string, { count: number; size: number }>();
  let heap = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType] as number] as string;
    const size = snap.nodes[i + iSize] as number;
    heap += size;
    let name = type;
    const own = snap.strings[snap.nodes[i + iName] as number] as string;
    if (type === 'object' || type === 'native') name = `${type}:${own}`;
    else if (type === 'closure') {
      let file = '';
      const sfi = edgeTo(i, 'shared');
      const script = sfi < 0 ? -1 : edgeTo(sfi, 'script');
      const url = script < 0 ? -1 : edgeTo(script, 'name');
      if (url >= 0)
        file = (snap.strings[snap.nodes[url + iName] as number] as string).split('/').slice(-2).join('/');
      name = `closure:${own || '(anonymous)'} ${file}:${lineOf.get(i) ?? '?'}`;
    } else if (values.strings && type.endsWith('string'))
      name = `${type}:${own.slice(0, 40).replace(/[0-9]+/g, '#')}`;
    else if (type === 'hidden' || type === 'code' || type === 'object shape' || type === 'array')
      name = `${type}:${own.slice(0, 40)}`;
    const e = byName.get(name);
    if (e === undefined) byName.set(name, { count: 1, size });
    else {
      e.count++;
      e.size += size;
    }
  }
  return { heap, byName };
}

function report(a: Measure, b: Measure, established: number, pssA: number, pssB: number): void {
  const per = (x: number): string => (x / established).toFixed(2);
  const rows: [string, number, number][] = [];
  for (const [name, e] of b.byName) {
    const o = a.byName.get(name) ?? { count: 0, size: 0 };
    rows.push([name, e.count - o.count, e.size - o.size]);
  }
  rows.sort((x, y) => y[2] - x[2]);
  console.log(`root ${root}, ${established} tunnels established`);
  console.log(
    `PSS ${(pssA / 2 ** 20).toFixed(1)} -> ${(pssB / 2 ** 20).toFixed(1)} MiB: ${(
      (pssB - pssA) / 1024 / established
    ).toFixed(2)} KiB/tunnel`,
  );
  console.log(
    `JS heap after GC ${(a.heap / 2 ** 20).toFixed(1)} -> ${(b.heap / 2 ** 20).toFixed(1)} MiB: ${per(
      b.heap - a.heap,
    )} B/tunnel`,
  );
  console.log('| objects per tunnel | bytes per tunnel | what |\n| ---: | ---: | --- |');
  for (const [name, count, size] of rows.slice(0, Number(values.top)))
    console.log(`| ${per(count)} | ${per(size)} | ${name} |`);
}

function hold(count: number): { settled: Promise<number>; stop: () => Promise<void> } {
  return values.tcp ? holdTcp(count) : holdConnect(count);
}

/** `count` idle connections to the `tcp` endpoint, 200 at a time, from this process. */
function holdTcp(count: number): { settled: Promise<number>; stop: () => Promise<void> } {
  const sockets: net.Socket[] = [];
  const settled = (async (): Promise<number> => {
    let ok = 0;
    for (let i = 0; i < count; i += 200) {
      const batch = Array.from(
        { length: Math.min(200, count - i) },
        () =>
          new Promise<boolean>((r) => {
            const s = net.connect(port, '127.0.0.1', () => r(true));
            s.on('error', () => r(false));
            sockets.push(s);
          }),
      );
      for (const b of await Promise.all(batch)) if (b) ok++;
    }
    // The tunnel is the addon's until it runs 50 ms: then JS adopts it.
    await sleep(500);
    return ok;
  })();
  const stop = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
  };
  return { settled, stop };
}

function holdConnect(count: number): { settled: Promise<number>; stop: () => Promise<void> } {
  const p: ChildProcess = spawn(
    connload,
    [
      'idle',
      '--proxy',
      `127.0.0.1:${port}`,
      '--target',
      `127.0.0.1:${upPort}`,
      '-n',
      String(count),
      '-c',
      '200',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const settled = new Promise<number>((resolveSettled, reject) => {
    let out = '';
    p.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"mode":"idle"'));
      if (line !== undefined) resolveSettled(Number(JSON.parse(line).established));
    });
    p.on('exit', () => reject(new Error('connload exited')));
  });
  const stop = async (): Promise<void> => {
    p.stdin?.end();
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
  };
  return { settled, stop };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}
