/**
 * What a cross-thread wake-up costs on this machine: two threads ping-pong through a futex
 * (Atomics.wait and Atomics.notify on shared memory), each waiting asleep for the other. A round
 * trip is two wake-ups of a sleeping thread, which is what a hand-over between the proxy's JS
 * thread and the addon's reactor thread costs; virtual machines differ most in it (an IPI to
 * another vCPU), so the figure goes beside the machine's description in the results.
 */
import { Worker } from 'node:worker_threads';

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
