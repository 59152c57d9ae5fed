/**
 * seccomp filters from a list of syscall names (a BPF program the addon assembles itself).
 *
 * `install` always synchronises the filter to every thread (TSYNC) unless told otherwise:
 * without it libuv's thread pool and V8's threads run unfiltered, so an async `fs` call
 * bypasses the filter (verified). Filters only ever add restrictions: a second install stacks
 * on the first, and children started afterwards (spawn, exec) inherit both.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { addon } from './addon.ts';
import { NativeError, toNativeError } from './errors.ts';

/** What the kernel does on a matching syscall. */
export type SeccompAction =
  | { readonly kind: 'kill_process' }
  | { readonly kind: 'return_error'; readonly errno: number }
  | { readonly kind: 'allow_and_log' }
  /** Raise SIGSYS in the calling thread (with strace, the SIGSYS line names the syscall). */
  | { readonly kind: 'trap' }
  | { readonly kind: 'allow' };

const KIND = { kill_process: 0, return_error: 1, allow_and_log: 2, trap: 3, allow: 4 } as const;

/** Syscalls that get one action. */
export interface SeccompRule {
  readonly action: SeccompAction;
  /** Syscall names; names missing on this architecture are skipped, unknown names are an error. */
  readonly syscalls: readonly string[];
}

/** A filter: each rule's syscalls get its action (a later rule wins), all others `defaultAction`. */
export interface SeccompFilter {
  readonly defaultAction: SeccompAction;
  readonly rules: readonly SeccompRule[];
  /** Synchronise to every thread. Default true; false only for experiments. */
  readonly allThreads?: boolean;
}

function encode(a: SeccompAction): [number, number] {
  if (a.kind === 'return_error' && !(Number.isInteger(a.errno) && a.errno > 0 && a.errno < 4096)) {
    throw new TypeError(`return_error needs an errno from 1 to 4095, got ${a.errno}`);
  }
  return [KIND[a.kind], a.kind === 'return_error' ? a.errno : 0];
}

function sameAction(a: SeccompAction, b: SeccompAction): boolean {
  return a.kind === b.kind && (a.kind !== 'return_error' || a.errno === (b as { errno: number }).errno);
}

/** Names Linux defines on no architecture (typos). */
export function unknownSyscalls(names: readonly string[]): string[] {
  return addon.seccompUnknownSyscalls([...names]);
}

/**
 * The name of syscall number `nr` on this architecture (as in an audit record's `syscall=90`
 * or strace's `si_syscall=`), or null.
 */
export function syscallName(nr: number): string | null {
  return addon.seccompSyscallName(nr);
}

/** Installs a filter on the process. Throws a `NativeError` (NATIVE_ERR_*) when refused. */
export function install(filter: SeccompFilter): void {
  const unknown = unknownSyscalls(filter.rules.flatMap((r) => r.syscalls));
  if (unknown.length > 0) {
    throw new NativeError(
      'NATIVE_ERR_EINVAL',
      `unknown syscall name(s) in the seccomp filter: ${unknown.join(', ')}`,
    );
  }
  const [dk, de] = encode(filter.defaultAction);
  // One action per syscall: a later rule wins; rules equal to the default are left out
  // (they change nothing, and only lengthen the program).
  const owner = new Map<string, number>();
  filter.rules.forEach((r, i) => {
    for (const name of r.syscalls) owner.set(name, i);
  });
  const groups: [number, number, string[]][] = [];
  filter.rules.forEach((r, i) => {
    if (sameAction(r.action, filter.defaultAction)) return;
    const names = [...new Set(r.syscalls)].filter((n) => owner.get(n) === i);
    if (names.length > 0) groups.push([...encode(r.action), names]);
  });
  try {
    addon.seccompInstall(dk, de, groups, filter.allThreads ?? true);
  } catch (e) {
    throw toNativeError(e, 'seccomp', 'installing the seccomp filter');
  }
}

/** One thread's seccomp state, from /proc/self/task/<tid>/status. */
export interface ThreadSeccomp {
  readonly tid: number;
  /** The thread's name (`MainThread`, `libuv-worker`, `V8Worker`…). */
  readonly name: string;
  /** 0 off, 1 strict, 2 filter. */
  readonly mode: number;
  /** Number of filters stacked on the thread. */
  readonly filters: number;
}

/** The seccomp state of every thread of this process. */
export function threads(): ThreadSeccomp[] {
  const out: ThreadSeccomp[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    let status: string;
    try {
      status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    } catch {
      continue; // Named boundary: the thread exited between listing and reading.
    }
    const field = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
    out.push({
      tid: Number(tid),
      name: field('Name'),
      mode: Number(field('Seccomp') || 0),
      filters: Number(field('Seccomp_filters') || 0),
    });
  }
  return out;
}
