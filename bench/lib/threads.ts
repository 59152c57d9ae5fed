/**
 * CPU time of a process tree split by thread, from /proc/<pid>/task/<tid>/schedstat (run time
 * in nanoseconds, finer than the 10 ms ticks of /proc/<pid>/stat, which matters for a 1-second
 * run). Oxy's work is on two threads: the JS thread (the process's main thread) and the native
 * addon's reactor thread (named `oxy-reactor`; before that name it inherited the main thread's,
 * which still counts, for older checkouts); V8's and libuv's helpers have names of their own
 * and are counted as "other".
 *
 * A thread that exits takes its schedstat with it (tinyproxy 1.11 runs a thread per connection
 * and ends it with the connection), so each process's thread-group total from /proc/<pid>/stat
 * (utime + stime, which count exited threads, in 10 ms ticks) is sampled too: what it grew by
 * beyond the live threads' run time is the exited threads' and is counted as "other".
 *
 * Ordering rule: take a sample before and after the measured window and subtract ({@link cpuSplitSince}).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { processTree } from './procs.ts';
import type { Figures } from './scenarios.ts';

/** Nanoseconds of CPU run time of a process tree, split by kind of thread. */
export interface CpuSplit {
  /** The main (JS) thread of each process. */
  js: number;
  /** The addon's reactor thread in Oxy (`oxy-reactor`, or named like the main thread). */
  reactor: number;
  /** Everything else: V8 workers, libuv's pool, the inspector's signal thread. */
  other: number;
  /** Context switches (voluntary and not) of the JS threads and of the reactor threads. */
  jsSwitches: number;
  reactorSwitches: number;
  /** Each process's thread-group CPU time (exited threads included), from /proc/<pid>/stat. */
  group: number;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux). */
const TICK_NS = 1e9 / 100;
/** Below this (two ticks), a difference of the tick-grained group total is rounding. */
const GROUP_NOISE_NS = 2 * TICK_NS;

/** utime + stime of a thread group, in ns (exited threads included). */
function groupNs(pid: number): number {
  const stat = read(`/proc/${pid}/stat`);
  if (stat === undefined) return 0;
  // Fields after the command's closing parenthesis start at field 3 (state); utime is 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11] ?? 0) + Number(f[12] ?? 0)) * TICK_NS;
}

function switchesOf(status: string | undefined): number {
  if (status === undefined) return 0;
  const m = /^voluntary_ctxt_switches:\s*(\d+)\s*\nnonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status);
  return m === null ? 0 : Number(m[1]) + Number(m[2]);
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // the thread or process exited while we looked
  }
}

/** The addon's reactor thread: named so, or (older builds) named like the main thread. */
function isReactor(comm: string | undefined, mainComm: string | undefined): boolean {
  return comm === REACTOR_THREAD || comm === mainComm;
}

/** The name the addon gives its reactor thread (packages/native/src/reactor.c). */
const REACTOR_THREAD = 'oxy-reactor';

/** A sample of the tree's CPU run time now. */
export function cpuSplit(root: number): CpuSplit {
  const out: CpuSplit = { js: 0, reactor: 0, other: 0, jsSwitches: 0, reactorSwitches: 0, group: 0 };
  for (const pid of processTree(root)) {
    out.group += groupNs(pid);
    const mainComm = read(`/proc/${pid}/comm`)?.trim();
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const ns = Number(read(`/proc/${pid}/task/${tid}/schedstat`)?.split(' ')[0] ?? 0);
      if (Number(tid) === pid) {
        out.js += ns;
        out.jsSwitches += switchesOf(read(`/proc/${pid}/task/${tid}/status`));
      } else if (isReactor(read(`/proc/${pid}/task/${tid}/comm`)?.trim(), mainComm)) {
        out.reactor += ns;
        out.reactorSwitches += switchesOf(read(`/proc/${pid}/task/${tid}/status`));
      } else out.other += ns;
    }
  }
  return out;
}

/**
 * CPU seconds used since `before`, by kind and in total. Threads that exited in between (a
 * thread per connection) are counted as "other", from the thread-group totals; a process that
 * exited in between is lost (only ever a helper: a proxy under test runs for the whole window).
 */
export function cpuSplitSince(root: number, before: CpuSplit): CpuSplit & { total: number } {
  const now = cpuSplit(root);
  const js = Math.max(0, now.js - before.js) / 1e9;
  const reactor = Math.max(0, now.reactor - before.reactor) / 1e9;
  let other = Math.max(0, now.other - before.other) / 1e9;
  const jsSwitches = Math.max(0, now.jsSwitches - before.jsSwitches);
  const reactorSwitches = Math.max(0, now.reactorSwitches - before.reactorSwitches);
  const group = now.group - before.group;
  const exited = group - (js + reactor + other) * 1e9;
  if (exited > GROUP_NOISE_NS) other += exited / 1e9;
  return { js, reactor, other, jsSwitches, reactorSwitches, group: group / 1e9, total: js + reactor + other };
}

/**
 * Context switches of a process tree so far, all threads, voluntary (the thread slept: a
 * wake-up follows) and not (preempted), from /proc/<pid>/task/<tid>/status.
 */
export function ctxSwitches(root: number): { voluntary: number; involuntary: number } {
  const out = { voluntary: 0, involuntary: 0 };
  for (const pid of processTree(root)) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const s = read(`/proc/${pid}/task/${tid}/status`) ?? '';
      out.voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
      out.involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(s)?.[1] ?? 0);
    }
  }
  return out;
}

/** Per-unit CPU figures in microseconds: the whole proxy, and Oxy's two threads. */
export function cpuPer(
  cpu:
    | (Omit<CpuSplit, 'jsSwitches' | 'reactorSwitches' | 'group'> & Partial<CpuSplit> & { total: number })
    | null,
  units: number,
  unit: string,
): Figures {
  if (!cpu || units <= 0) return { primary: 0 };
  const us = (s: number) => (s * 1e6) / units;
  return {
    primary: 0,
    [`cpu_us_per_${unit}`]: us(cpu.total),
    [`js_us_per_${unit}`]: us(cpu.js),
    [`reactor_us_per_${unit}`]: us(cpu.reactor),
    // Context switches of the JS and reactor threads (sampled in this process only: not the UDP
    // load generator's figures).
    ...(cpu.jsSwitches === undefined ? {} : { [`js_csw_per_${unit}`]: cpu.jsSwitches / units }),
    ...(cpu.reactorSwitches === undefined
      ? {}
      : { [`reactor_csw_per_${unit}`]: cpu.reactorSwitches / units }),
  };
}
