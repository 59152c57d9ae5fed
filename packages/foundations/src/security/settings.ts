/**
 * Settings for syscall sandboxing: `security.syscall_sandboxing.{enabled, violation_action,
 * extra_syscalls, deny_io_uring}`, and `applySandboxFromSettings`, which a service calls once
 * its listeners are open.
 */
import { FND_ERR, FoundationsError } from '../errors.ts';
import { type Infer, s } from '../settings/index.ts';
import {
  enableSyscallSandboxing,
  restartWithoutIoUring,
  type SandboxReport,
  unknownSyscallNames,
  ViolationAction,
} from './sandbox.ts';
import { allowList, CHILD_PROCESS, FS_WRITE, NODE_SERVICE, type SyscallAllowList } from './syscall-lists.ts';

/** The `security.syscall_sandboxing` section. */
export const SyscallSandboxingSettings = s.enabled(
  'Syscall sandboxing (seccomp): once listeners are open, every thread of the process may only make the ' +
    'syscalls a Node network service needs; anything else gets the violation action. Linux only.',
  false,
  {
    violation_action: s.oneOf(
      'What happens on a syscall outside the allow lists: kill_process (SIGSYS), return_error (the call fails ' +
        'with EPERM) or allow_and_log (the kernel logs it; use this to find what a service needs).',
      ['kill_process', 'return_error', 'allow_and_log'] as const,
      'kill_process',
    ),
    extra_syscalls: s.list(
      'Syscalls to allow beyond the built-in lists, by name (e.g. "sched_setaffinity").',
      s.str('A syscall name.', ''),
      [],
    ),
    deny_io_uring: s.bool(
      'Start Node again at launch with io_uring refused, so no io_uring ring exists: seccomp cannot see what ' +
        'is submitted through a ring. Costs one extra Node start-up.',
      true,
    ),
  },
);

/** The parsed `security.syscall_sandboxing` section. */
export type SyscallSandboxingSettings = Infer<typeof SyscallSandboxingSettings>;

/** The `security` section, for services that embed it whole. */
export const SecuritySettings = s.object('Security hardening of the process.', {
  syscall_sandboxing: SyscallSandboxingSettings,
});

/** The parsed `security` section. */
export type SecuritySettings = Infer<typeof SecuritySettings>;

/**
 * The lists a sandboxed service gets by default: a Node network service, file writes (the
 * restart socket is replaced and chmod'ed by the next generation; logs may go to files) and
 * child processes (graceful restarts).
 */
export const DEFAULT_SERVICE_LISTS: readonly SyscallAllowList[] = [NODE_SERVICE, FS_WRITE, CHILD_PROCESS];

/** The `ViolationAction` a settings value names. */
export function violationActionFromSettings(
  name: SyscallSandboxingSettings['violation_action'],
): ViolationAction {
  switch (name) {
    case 'kill_process':
      return ViolationAction.killProcess();
    case 'return_error':
      return ViolationAction.returnError('EPERM');
    case 'allow_and_log':
      return ViolationAction.allowAndLog();
  }
}

/**
 * Turns the sandbox on as `settings` say (nothing when disabled) with `lists` plus the
 * settings' `extra_syscalls`. Call after listeners are open. Returns the report, or null.
 */
export function applySandboxFromSettings(
  settings: SyscallSandboxingSettings,
  lists: readonly SyscallAllowList[] = DEFAULT_SERVICE_LISTS,
): SandboxReport | null {
  if (!settings.enabled) return null;
  const bad = settings.extra_syscalls.filter((n) => !/^[a-z_][a-z0-9_]*$/.test(n));
  const unknown = bad.length > 0 ? bad : unknownSyscallNames(settings.extra_syscalls);
  if (unknown.length > 0) {
    throw new FoundationsError(
      FND_ERR.SECCOMP,
      `security.syscall_sandboxing.extra_syscalls: unknown syscall name(s) ${unknown.map((n) => JSON.stringify(n)).join(', ')}`,
      { userError: true },
    );
  }
  return enableSyscallSandboxing(violationActionFromSettings(settings.violation_action), [
    allowList(...lists, settings.extra_syscalls),
  ]);
}

/**
 * At start-up, before anything is opened: when sandboxing and `deny_io_uring` are on, starts
 * this process again with io_uring refused (`restartWithoutIoUring`), so that no ring exists
 * when the sandbox goes on. Returns only when there is nothing (more) to do. Linux only.
 */
export function denyIoUringFromSettings(settings: SyscallSandboxingSettings): void {
  if (settings.enabled && settings.deny_io_uring) restartWithoutIoUring();
}
