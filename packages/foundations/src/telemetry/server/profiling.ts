/**
 * Memory and CPU profiles for the telemetry server, through V8's inspector in this process.
 *
 * - Heap: V8's sampling heap profiler runs from start-up (`telemetry.memory_profiler`), like
 *   jemalloc's sampling profiler in Foundations: it records a stack for about one allocation
 *   per `sampling_interval` bytes and keeps those still alive, so `/pprof/heap` can answer at
 *   once with what is live now. The JSON is a `.heapprofile` that Chrome DevTools opens
 *   (Memory tab, Load).
 * - CPU: `/pprof/profile?seconds=N` runs the CPU profiler for N seconds and returns a
 *   `.cpuprofile` (DevTools Performance tab). One at a time: V8 has one profiler per isolate.
 */
import { Session } from 'node:inspector/promises';
import v8 from 'node:v8';

let session: Session | null = null;
let heapSampling = false;
let cpuBusy = false;

function connected(): Session {
  if (session === null) {
    session = new Session();
    session.connect();
  }
  return session;
}

/** Starts the sampling heap profiler (idempotent). */
export async function startHeapSampling(samplingInterval: number): Promise<void> {
  if (heapSampling) return;
  const s = connected();
  await s.post('HeapProfiler.enable');
  await s.post('HeapProfiler.startSampling', { samplingInterval: Math.max(1, Math.floor(samplingInterval)) });
  heapSampling = true;
}

/** True while the sampling heap profiler runs. */
export function heapSamplingActive(): boolean {
  return heapSampling;
}

/** The live sampled allocations as a DevTools `.heapprofile` object. */
export async function heapProfile(): Promise<unknown> {
  const { profile } = await connected().post('HeapProfiler.getSamplingProfile');
  return profile;
}

/** V8 heap statistics: totals and per-space figures, plus the process's memory usage. */
export function heapStats(): Record<string, unknown> {
  return {
    heap: v8.getHeapStatistics(),
    spaces: v8.getHeapSpaceStatistics(),
    process: process.memoryUsage(),
  };
}

/** Thrown when a CPU profile is already being taken. */
export class ProfilerBusyError extends Error {
  constructor() {
    super('a CPU profile is already being taken; retry when it finishes');
    this.name = 'ProfilerBusyError';
  }
}

/** Profiles the CPU for `seconds` and returns a DevTools `.cpuprofile` object. */
export async function cpuProfile(seconds: number): Promise<unknown> {
  if (cpuBusy) throw new ProfilerBusyError();
  cpuBusy = true;
  const s = connected();
  try {
    await s.post('Profiler.enable');
    await s.post('Profiler.start');
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000).unref());
    const { profile } = await s.post('Profiler.stop');
    return profile;
  } finally {
    cpuBusy = false;
  }
}

/** Stops the profilers and disconnects from the inspector (at shutdown). */
export async function stopProfiling(): Promise<void> {
  const s = session;
  session = null;
  if (s === null) return;
  if (heapSampling) {
    heapSampling = false;
    await s.post('HeapProfiler.stopSampling').catch(() => undefined); // boundary: shutdown
  }
  s.disconnect();
}
