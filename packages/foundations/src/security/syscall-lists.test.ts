/**
 * Allow lists, violation actions and the settings section, without installing a filter.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { seccomp } from 'native';
import { defaultSettings, parseSettings, s } from '../settings/index.ts';
import {
  ASYNC,
  allowList,
  applySandboxFromSettings,
  CHILD_PROCESS,
  DEFAULT_SERVICE_LISTS,
  DNS,
  FS_READ,
  FS_WRITE,
  NET_SOCKET_API,
  NODE_SERVICE,
  SERVICE_BASICS,
  SecuritySettings,
  SyscallSandboxingSettings,
  ViolationAction,
  violationActionFromSettings,
} from './index.ts';

test('every predefined list names only syscalls Linux defines', () => {
  for (const l of [
    SERVICE_BASICS,
    ASYNC,
    NET_SOCKET_API,
    FS_READ,
    FS_WRITE,
    CHILD_PROCESS,
    DNS,
    NODE_SERVICE,
  ]) {
    assert.deepEqual(seccomp.unknownSyscalls(l.syscalls), [], l.name);
  }
});

test('the lists hold what measurement showed a Node service needs after start-up', () => {
  const all = new Set(allowList(...DEFAULT_SERVICE_LISTS).syscalls);
  // strace -f -c of an HTTP proxy with fs, dns, zlib, fetch, dgram and a child process:
  const measured =
    'accept4 access arch_prctl bind brk capget clock_nanosleep clone clone3 close connect epoll_create1 epoll_ctl ' +
    'epoll_pwait eventfd2 execve fcntl fstat futex getcwd getdents64 getegid geteuid getgid getpid getrandom ' +
    'getsockname getsockopt gettid getuid ioctl listen lseek madvise mmap mprotect munmap newfstatat openat pipe2 ' +
    'prctl pread64 prlimit64 read readlink recvmsg rseq rt_sigaction rt_sigprocmask rt_sigreturn sched_getaffinity ' +
    'sched_getparam sched_getscheduler sendmsg sendto set_robust_list set_tid_address setsockopt socket statx ' +
    'sysinfo uname unlink wait4 write writev exit exit_group seccomp';
  assert.deepEqual(
    measured.split(' ').filter((n) => !all.has(n)),
    [],
  );
  assert.equal(all.has('io_uring_setup'), false, 'io_uring is handled by the sandbox itself');
  assert.equal(all.has('ptrace'), false);
  assert.equal(all.has('mount'), false);
});

test('allowList composes lists and an app’s own names, without duplicates or mutation', () => {
  const before = NET_SOCKET_API.syscalls.length;
  const l = allowList(SERVICE_BASICS, NET_SOCKET_API, ['sched_setaffinity', 'socket'], 'mlock2');
  assert.equal(l.name, 'service_basics+net_socket_api+app');
  assert.ok(l.syscalls.includes('sched_setaffinity'));
  assert.ok(l.syscalls.includes('mlock2'));
  assert.equal(l.syscalls.filter((n) => n === 'socket').length, 1);
  assert.equal(NET_SOCKET_API.syscalls.length, before);
  assert.throws(() => (l.syscalls as string[]).push('x'), TypeError);
  assert.throws(() => allowList(['Open']), /lower-case identifiers like "openat", got "Open"/);
  assert.throws(() => allowList(['rm -rf']), TypeError);
  assert.throws(() => allowList([42 as unknown as string]), TypeError);
});

test('ViolationAction constructors', () => {
  assert.deepEqual(ViolationAction.killProcess(), { kind: 'kill_process' });
  assert.deepEqual(ViolationAction.returnError(), { kind: 'return_error', errno: 1 });
  assert.deepEqual(ViolationAction.returnError('EACCES'), { kind: 'return_error', errno: 13 });
  assert.deepEqual(ViolationAction.returnError(38), { kind: 'return_error', errno: 38 });
  assert.deepEqual(ViolationAction.allowAndLog(), { kind: 'allow_and_log' });
  assert.throws(() => ViolationAction.returnError('ENOTANERRNO'), { code: 'FND_ERR_SECCOMP' });
  assert.throws(() => ViolationAction.returnError(0), { code: 'FND_ERR_SECCOMP' });
  assert.throws(() => ViolationAction.returnError(5000), { code: 'FND_ERR_SECCOMP' });
});

test('settings: security.syscall_sandboxing defaults to off, with kill_process', () => {
  const schema = s.object('A service.', { security: SecuritySettings });
  const d = defaultSettings(schema);
  assert.deepEqual(d.security.syscall_sandboxing, {
    enabled: false,
    violation_action: 'kill_process',
    extra_syscalls: [],
    deny_io_uring: true,
  });
  assert.deepEqual(violationActionFromSettings('return_error'), { kind: 'return_error', errno: 1 });
  assert.deepEqual(violationActionFromSettings('allow_and_log'), { kind: 'allow_and_log' });
  const parsed = defaultSettings(SyscallSandboxingSettings);
  assert.equal(parsed.enabled, false);
});

test('settings: a bad violation_action is an error naming its path', () => {
  const schema = s.object('A service.', { security: SecuritySettings });
  assert.throws(
    () =>
      parseSettings(schema, [
        { source: 'x.yaml', value: { security: { syscall_sandboxing: { violation_action: 'explode' } } } },
      ]),
    (e: Error) => /security\.syscall_sandboxing\.violation_action.*x\.yaml/.test(e.message),
  );
  assert.throws(
    () =>
      parseSettings(schema, [
        { source: 'y.yaml', value: { security: { syscall_sandboxing: { extra_syscalls: 'read' } } } },
      ]),
    (e: Error) => /security\.syscall_sandboxing\.extra_syscalls/.test(e.message),
  );
});

test('applySandboxFromSettings names the key of an unknown extra syscall', () => {
  assert.throws(
    () =>
      applySandboxFromSettings({
        enabled: true,
        violation_action: 'kill_process',
        extra_syscalls: ['no_such_call'],
        deny_io_uring: false,
      }),
    { code: 'FND_ERR_SECCOMP', message: /extra_syscalls: unknown syscall name\(s\) "no_such_call"/ },
  );
});

test('applySandboxFromSettings does nothing when disabled and sandboxes when enabled', () => {
  const script = `
    import { applySandboxFromSettings } from ${JSON.stringify(fileURLToPath(new URL('./index.ts', import.meta.url)))};
    const off = applySandboxFromSettings({ enabled: false, violation_action: 'kill_process', extra_syscalls: [], deny_io_uring: false });
    const on = applySandboxFromSettings({ enabled: true, violation_action: 'return_error', extra_syscalls: ['sched_setaffinity'], deny_io_uring: false });
    const { setPriority } = await import('node:os');
    let code = 'allowed';
    try { setPriority(0, 1); } catch (e) { code = e.info?.code ?? e.code; }
    console.log(JSON.stringify({ off, on: on && on.list, code }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    off: null,
    on: 'service_basics+async+net_socket_api+fs_read+dns+fs_write+child_process+app',
    code: 'EPERM',
  });
});
