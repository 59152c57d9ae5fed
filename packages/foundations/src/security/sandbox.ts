/**
 * Syscall sandboxing: after a service has opened what it needs (listeners, files, the restart
 * socket), `enableSyscallSandboxing` confines the whole process, every thread included, to the
 * syscalls in its allow lists. Anything else gets the violation action.
 *
 * Ordering rules:
 * 1. Call it once, after listeners are open and before serving untrusted input.
 * 2. The filter covers all threads (TSYNC), those started later (Workers, lazily started libuv
 *    workers) and every child process, including the next generation of a graceful restart,
 *    which starts under the old generation's filter: hence `CHILD_PROCESS`.
 * 3. io_uring submissions are not seen by seccomp. The sandbox always answers `io_uring_setup`
 *    with ENOSYS (libuv then uses epoll), but rings libuv made at start-up still exist, and libuv
 *    needs `io_uring_enter` for them; it is then allowed and the report says so. To have no
 *    ring at all, call `restartWithoutIoUring()` first thing at start-up (see docs/security.md).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import type * as Native from 'native';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { allowList, type SyscallAllowList } from './syscall-lists.ts';

/** What the kernel does when a syscall outside the allow lists is made. */
export type ViolationAction =
  | { readonly kind: 'kill_process' }
  | { readonly kind: 'return_error'; readonly errno: number }
  | { readonly kind: 'allow_and_log' };

/** Constructors for `ViolationAction`. */
export const ViolationAction = {
  /** Kill the whole process with SIGSYS (exit status 159 from a shell). */
  killProcess: (): ViolationAction => ({ kind: 'kill_process' }),
  /** Make the syscall fail with `errno` (a number or a name like `'EPERM'`; default EPERM). */
  returnError: (errno: number | string = 'EPERM'): ViolationAction => {
    const n = typeof errno === 'number' ? errno : constants.errno[errno as keyof typeof constants.errno];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 4095) {
      throw new FoundationsError(FND_ERR.SECCOMP, `return_error: unknown errno ${JSON.stringify(errno)}`, {
        userError: true,
      });
    }
    return { kind: 'return_error', errno: n };
  },
  /** Let the syscall run and have the kernel log it (audit log / dmesg: `type=1326`). */
  allowAndLog: (): ViolationAction => ({ kind: 'allow_and_log' }),
} as const;

/** What `enableSyscallSandboxing` did. */
export interface SandboxReport {
  /** Name of the combined allow list. */
  readonly list: string;
  /** Number of syscall names allowed. */
  readonly allowed: number;
  /**
   * `no_rings`: no io_uring instance exists and none can be made (the strong case).
   * `existing_rings_allowed`: libuv made rings before the sandbox; `io_uring_enter` is allowed
   * for them, and operations submitted through them are not filtered.
   */
  readonly ioUring: 'no_rings' | 'existing_rings_allowed';
  /** Threads the filter was synchronised to. */
  readonly threads: number;
}

const IO_URING_SETUP = ['io_uring_setup', 'io_uring_register'];
const IO_URING_DENIED_ENV = 'FOUNDATIONS_IO_URING_DENIED';

function loadNative(): typeof Native {
  try {
    return createRequire(import.meta.url)('native') as typeof Native;
  } catch (e) {
    throw new FoundationsError(
      FND_ERR.SECCOMP,
      `syscall sandboxing is unavailable: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
}

/** The names in `names` that are no syscall on any architecture (typos). */
export function unknownSyscallNames(names: readonly string[]): string[] {
  return loadNative().seccomp.unknownSyscalls(names);
}

/** How many io_uring instances this process holds (from /proc/self/fd). */
export function ioUringInstances(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[io_uring]') n++;
    } catch {
      // Named boundary: the listing's own descriptor is gone by the time it is read.
    }
  }
  return n;
}

/**
 * Confines every thread of this process, and its future children, to the syscalls in `lists`;
 * any other syscall gets `action`. Throws `FND_ERR_SECCOMP` when the kernel refuses the filter.
 * Filters stack: calling it again can only narrow what is allowed.
 */
export function enableSyscallSandboxing(
  action: ViolationAction,
  lists: readonly (SyscallAllowList | readonly string[])[],
): SandboxReport {
  const native = loadNative();
  const rings = ioUringInstances();
  const combined = allowList(...lists);
  const allowed = combined.syscalls.filter((n) => !IO_URING_SETUP.includes(n) && n !== 'io_uring_enter');
  if (rings > 0) allowed.push('io_uring_enter');
  const rules: Native.SeccompRule[] = [
    { action: { kind: 'allow' }, syscalls: allowed },
    // ENOSYS, not the violation action: a child Node (a restart) probes io_uring and must
    // fall back to epoll rather than die.
    { action: { kind: 'return_error', errno: constants.errno.ENOSYS }, syscalls: IO_URING_SETUP },
  ];
  if (rings === 0) {
    rules.push({
      action: { kind: 'return_error', errno: constants.errno.ENOSYS },
      syscalls: ['io_uring_enter'],
    });
  }
  try {
    native.seccomp.install({ defaultAction: action, rules, allThreads: true });
  } catch (e) {
    throw new FoundationsError(
      FND_ERR.SECCOMP,
      `enabling syscall sandboxing failed: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  return {
    list: combined.name,
    allowed: allowed.length,
    ioUring: rings > 0 ? 'existing_rings_allowed' : 'no_rings',
    threads: native.seccomp.threads().length,
  };
}

/**
 * Makes sure this process has no io_uring instance, so that nothing escapes the sandbox's view.
 * If libuv made rings at start-up, this installs a filter answering `io_uring_*` with ENOSYS and
 * replaces the process image with the same Node and arguments (execve: same PID, same inherited
 * descriptors, e.g. systemd's LISTEN_FDS); libuv in the new image falls back to epoll. Returns
 * only when there is nothing to do: call it first thing, before opening anything or starting
 * any work, because everything done before is thrown away. Costs one Node start-up (measured
 * in docs/security.md).
 */
export function restartWithoutIoUring(): 'no_rings' {
  if (ioUringInstances() === 0) return 'no_rings';
  if (process.env[IO_URING_DENIED_ENV] === '1') {
    throw new FoundationsError(
      FND_ERR.SECCOMP,
      'io_uring is still in use after restarting with it denied: is the filter stripped by a wrapper?',
    );
  }
  const native = loadNative();
  try {
    native.seccomp.install({
      defaultAction: { kind: 'allow' },
      rules: [
        {
          action: { kind: 'return_error', errno: constants.errno.ENOSYS },
          syscalls: [...IO_URING_SETUP, 'io_uring_enter'],
        },
      ],
    });
  } catch (e) {
    throw new FoundationsError(FND_ERR.SECCOMP, `denying io_uring failed: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const argv = [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
  // Stdio and systemd's LISTEN_FDS (3, 4, …) must reach the new image.
  const listenFds = Number(process.env.LISTEN_FDS ?? 0);
  const keep = [
    0,
    1,
    2,
    ...Array.from({ length: Number.isInteger(listenFds) ? listenFds : 0 }, (_, i) => 3 + i),
  ];
  // execve only returns by throwing; the filter above stays, which is harmless (it only
  // refuses io_uring).
  return native.execve(process.execPath, argv, { ...process.env, [IO_URING_DENIED_ENV]: '1' }, keep);
}
