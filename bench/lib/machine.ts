/**
 * What the machine is and how busy it is. A benchmark on a shared 2-core machine is only worth
 * something if it says when other work ran beside it: {@link CpuWatch} measures the CPU time
 * spent during a run by processes that are not the harness's, so a run disturbed by them is
 * marked (and repeated by the caller).
 */
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { treeCpuTicks } from './procs.ts';

function systemBusyTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal. Idle and iowait are not busy. Interrupt time
  // is left out of both: loopback traffic of our own runs is processed there and charged to no
  // process, so counting it would make every network-heavy run look disturbed.
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, , , steal = 0] = v;
  const busy = user + nice + system + steal;
  return { busy, total: busy + idle + iowait };
}

/**
 * CPU ticks of the kernel's softirq threads (ksoftirqd/N). Under heavy loopback traffic (S7's
 * hundreds of thousands of datagrams a second) the kernel defers packet processing of our own
 * runs to them, so they count as ours, not as foreign work.
 */
function softirqThreadTicks(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (!stat.includes('(ksoftirqd/')) continue;
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += Number(f[11]) + Number(f[12]);
    } catch {
      // exited while we looked
    }
  }
  return total;
}

/** Measures, between `start()` and `stop()`, the share of the machine used by foreign processes. */
export class CpuWatch {
  #sys = systemBusyTicks();
  #ours = treeCpuTicks(process.pid) + softirqThreadTicks();

  /** Restarts the measurement window. */
  start(): void {
    this.#sys = systemBusyTicks();
    this.#ours = treeCpuTicks(process.pid) + softirqThreadTicks();
  }

  /**
   * Ends the window. `foreign` is the fraction (0..1) of all cores' time used by processes that
   * the harness did not start; `total` the fraction used by everything.
   */
  stop(): { foreign: number; total: number } {
    const sys = systemBusyTicks();
    const ours = treeCpuTicks(process.pid) + softirqThreadTicks();
    const elapsed = sys.total - this.#sys.total;
    if (elapsed <= 0) return { foreign: 0, total: 0 };
    const busy = sys.busy - this.#sys.busy;
    const foreign = Math.max(0, busy - (ours - this.#ours)) / elapsed;
    return { foreign, total: busy / elapsed };
  }
}

/** A share of foreign CPU above which a run is marked busy (0.10 = a fifth of one core of two). */
export const BUSY_THRESHOLD = 0.1;

/** Samples the machine for `ms` and returns the foreign CPU share (used before a run). */
export async function foreignLoad(ms: number): Promise<number> {
  const w = new CpuWatch();
  await new Promise((r) => setTimeout(r, ms));
  return w.stop().foreign;
}

/** One line that names the machine: CPU model, cores, memory, kernel. */
export function describeMachine(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim() ?? 'unknown CPU';
  const mem = Math.round(os.totalmem() / 2 ** 30);
  let distro = 'Linux';
  try {
    distro = /^PRETTY_NAME="?([^"\n]+)/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? distro;
  } catch {
    // no os-release: keep the generic name
  }
  return `${cpus.length} × ${model}, ${mem} GiB RAM, ${distro}, kernel ${os.release()}`;
}
