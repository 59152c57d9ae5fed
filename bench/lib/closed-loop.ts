/**
 * The closed-loop measurement the datagram load generators share (`bench/tools/udp-load.ts`,
 * S7, and `bench/tools/masque-load.ts`, S11): a fixed window of datagrams kept circulating,
 * restarted when it dies out, measured over a window after a warm-up, with the CPU time of the
 * proxy's process tree split by thread (`threads.ts`). Each tool only says how to start its
 * window and how many round trips came back; the JSON fields are the same for both.
 *
 * Ordering rule: the tool sets up its sockets or tunnels and their reply handlers, then calls
 * {@link runClosedLoop}, which sends the first window, warms up, samples the CPU, measures,
 * samples again, and stops its watchdog before returning. The tool then closes its sockets.
 */
import { loadavg } from 'node:os';
import { cpuSplit, cpuSplitSince } from './threads.ts';

/** The `parseArgs` options every closed-loop tool takes, with their defaults. */
export const CLOSED_LOOP_OPTIONS = {
  window: { type: 'string', default: '256' },
  seconds: { type: 'string', default: '5' },
  warmup: { type: 'string', default: '0.7' },
  pid: { type: 'string' },
} as const;

/** What {@link runClosedLoop} needs of a tool. */
export interface ClosedLoop {
  /** Sends a whole window of datagrams (at the start, and again when the loop died out). */
  kick(): void;
  /** Round trips completed so far. */
  received(): number;
  /** Replies found wrong so far (default: none are checked). */
  bad?(): number;
  /** The `parseArgs` values of {@link CLOSED_LOOP_OPTIONS}. */
  readonly args: { readonly seconds: string; readonly warmup: string; readonly pid?: string | undefined };
}

/** The measured window, as both tools print it (snake case: the JSON the harness reads). */
export interface ClosedLoopResult {
  round_trips: number;
  round_trips_per_s: number;
  bad: number;
  /** Times the loop died out (datagrams lost) and was restarted within the window. */
  restarts: number;
  seconds: number;
  load_average: number | undefined;
  cpu_s?: number;
  cpu_js_s?: number;
  cpu_reactor_s?: number;
  cpu_other_s?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the loop: warm-up, then the measured window (with `--pid`, that process tree's CPU). */
export async function runClosedLoop(loop: ClosedLoop): Promise<ClosedLoopResult> {
  const bad = loop.bad ?? (() => 0);
  loop.kick();
  let seen = 0;
  let restarts = 0;
  const watchdog = setInterval(() => {
    const now = loop.received();
    if (now === seen) {
      restarts++;
      loop.kick();
    }
    seen = now;
  }, 100);
  await sleep(Number(loop.args.warmup) * 1000);
  const pid = loop.args.pid ? Number(loop.args.pid) : null;
  const cpu0 = pid ? cpuSplit(pid) : null;
  const r0 = loop.received();
  const bad0 = bad();
  restarts = 0;
  const t0 = process.hrtime.bigint();
  await sleep(Number(loop.args.seconds) * 1000);
  const got = loop.received() - r0;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = pid && cpu0 ? cpuSplitSince(pid, cpu0) : null;
  clearInterval(watchdog);
  return {
    round_trips: got,
    round_trips_per_s: got / elapsed,
    bad: bad() - bad0,
    restarts,
    seconds: elapsed,
    load_average: loadavg()[0],
    ...(cpu
      ? { cpu_s: cpu.total, cpu_js_s: cpu.js, cpu_reactor_s: cpu.reactor, cpu_other_s: cpu.other }
      : {}),
  };
}
