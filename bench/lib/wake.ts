/**
 * What a cross-thread wake-up costs on this machine: two threads ping-pong through a futex
 * (Atomics.wait and Atomics.notify on shared memory), each waiting asleep for the other. A round
 * trip is two wake-ups of a sleeping thread, which is what a hand-over between the proxy's JS
 * thread and the addon's reactor thread costs; virtual machines differ most in it (an IPI to
 * another vCPU), so the figure goes beside the machine's description in the results. Beside it
 * goes where the kernel places a woken task ({@link wakePlacement}): on a machine that packs
 * tasks onto a busy CPU, a proxy that leaves its CPU partly idle shares it with its peers
 * (bench/analysis-l4.md, S6b).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { lastJson, runCommand } from './procs.ts';

const ROUNDS = 2000;

/** The worker's side: sleeps until the ping count moves, answers by moving the pong count; a negative ping ends it. */
const PONG = `
const { workerData } = require('node:worker_threads');
const slots = new Int32Array(workerData);
let seen = 0;
for (;;) {
  Atomics.wait(slots, 0, seen);
  seen = Atomics.load(slots, 0);
  if (seen < 0) break;
  Atomics.store(slots, 1, seen);
  Atomics.notify(slots, 1);
}
`;

/** The median and 90th percentile of a futex round trip between two threads, in µs. */
export async function wakeRoundTrip(): Promise<{ readonly medianUs: number; readonly p90Us: number }> {
  const slots = new Int32Array(new SharedArrayBuffer(8)); // [ping count, pong count]
  const worker = new Worker(PONG, { eval: true, workerData: slots.buffer });
  await new Promise((resolve) => worker.once('online', resolve));
  const samples: number[] = [];
  try {
    for (let i = 1; i <= ROUNDS; i++) {
      const t0 = process.hrtime.bigint();
      Atomics.store(slots, 0, i);
      Atomics.notify(slots, 0);
      while (Atomics.load(slots, 1) !== i) Atomics.wait(slots, 1, i - 1, 1000);
      samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    Atomics.store(slots, 0, -1);
    Atomics.notify(slots, 0);
    await worker.terminate();
  }
  samples.sort((a, b) => a - b);
  return {
    medianUs: samples[samples.length >> 1] ?? 0,
    p90Us: samples[Math.floor(samples.length * 0.9)] ?? 0,
  };
}

/**
 * Where this machine's kernel puts a woken task (bench/tools/wake-placement.c): the shares of
 * wake-ups that ran on the waker's CPU, by how busy that CPU was (duty, 0..1), and the kernel's
 * `sched_vcpu_pack` setting where it has one (a VM kernel's option, not upstream Linux).
 */
export async function wakePlacement(
  binary: string,
  duties: readonly number[] = [],
): Promise<{
  readonly duty: readonly number[];
  readonly onWakerCpu: readonly number[];
  readonly vcpuPack: string | null;
}> {
  const r = await runCommand(binary, duties.map(String), { timeoutMs: 30000 });
  // A probe that printed no result leaves the placement unmeasured (the machine line says so).
  let parsed: { duty?: number[]; on_waker_cpu?: number[] } = {};
  try {
    parsed = lastJson(r.stdout);
  } catch {
    // no JSON line: measured nothing
  }
  let vcpuPack: string | null = null;
  try {
    vcpuPack = readFileSync('/proc/sys/kernel/sched_vcpu_pack', 'utf8').trim();
  } catch {
    // upstream kernels have no such setting
  }
  return { duty: parsed.duty ?? [], onWakerCpu: parsed.on_waker_cpu ?? [], vcpuPack };
}

/**
 * One phrase for the results' machine line: below which busy share a woken task joins its
 * waker's CPU (the step the placement shows), or that it never or always does.
 */
export function describePlacement(p: {
  duty: readonly number[];
  onWakerCpu: readonly number[];
  vcpuPack: string | null;
}): string {
  const joins = p.onWakerCpu.map((share) => share >= 0.5);
  const pack = p.vcpuPack === null ? '' : ` (kernel sched_vcpu_pack=${p.vcpuPack})`;
  // A negative share is a duty the probe could not measure (no wake-up counted).
  if (joins.length === 0 || p.onWakerCpu.some((share) => share < 0)) return 'wake-up placement not measured';
  if (joins.every((j) => !j)) return `a woken task does not join its waker's busy CPU${pack}`;
  const last = joins.lastIndexOf(true);
  if (last === joins.length - 1)
    return `a woken task joins its waker's CPU however busy (up to ${pct(p.duty[last])})${pack}`;
  return `a woken task joins its waker's CPU while that is under ${pct(p.duty[last + 1])} busy${pack}`;
}

function pct(duty: number | undefined): string {
  return `${Math.round((duty ?? 0) * 100)} %`;
}
