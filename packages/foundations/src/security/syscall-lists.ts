/**
 * Syscall allow lists as composable values.
 *
 * A list is a name and a set of syscall names. `allowList(...)` joins lists and an app's own
 * names into a new list; nothing is mutated, so the predefined lists can be shared. Names are
 * the kernel's (as in `man 2 syscalls`); a name missing on the running architecture (e.g.
 * `open` on arm64) is skipped when the filter is built, an unknown name is an error.
 *
 * The predefined lists were measured on Node 24 (strace -f -c of an HTTP server and proxy,
 * fs, dns, crypto, zlib, dgram, fetch and a child process, then trap-driven rounds; see
 * docs/security.md). They are grouped by what a service does, so a service that never spawns
 * or writes files can leave those lists out.
 */

/** A named set of syscalls the sandbox lets through. */
export interface SyscallAllowList {
  /** Names of the lists this was made from, e.g. `service_basics+net_socket_api+app`. */
  readonly name: string;
  readonly syscalls: readonly string[];
}

function list(name: string, syscalls: string): SyscallAllowList {
  return Object.freeze({ name, syscalls: Object.freeze(syscalls.trim().split(/\s+/)) });
}

/**
 * Joins lists and extra syscall names (an app's own) into one list, without duplicates.
 * `allowList(SERVICE_BASICS, NET_SOCKET_API, ['sched_setaffinity'])`.
 */
export function allowList(
  ...parts: readonly (SyscallAllowList | readonly string[] | string)[]
): SyscallAllowList {
  const names: string[] = [];
  const seen = new Set<string>();
  const labels: string[] = [];
  for (const p of parts) {
    const add = typeof p === 'string' ? [p] : 'syscalls' in p ? p.syscalls : p;
    if (typeof p === 'object' && 'name' in p) labels.push(p.name);
    else if (!labels.includes('app')) labels.push('app');
    for (const n of add) {
      if (typeof n !== 'string' || !/^[a-z_][a-z0-9_]*$/.test(n)) {
        throw new TypeError(
          `syscall names are lower-case identifiers like "openat", got ${JSON.stringify(n)}`,
        );
      }
      if (!seen.has(n)) {
        seen.add(n);
        names.push(n);
      }
    }
  }
  return Object.freeze({ name: labels.join('+') || 'empty', syscalls: Object.freeze(names) });
}

/**
 * What any Node process needs once running: memory, threads (V8 and libuv workers start lazily,
 * so `clone3`, `rseq`, `set_robust_list` are needed after the sandbox is on), signals, time,
 * identity, randomness, `exit`/`exit_group` (which `strace -c` misses: without them the first
 * exiting thread kills the process), and basic descriptor operations. `seccomp` itself is here:
 * a filter can only be narrowed, and the next generation of a restart installs its own.
 */
export const SERVICE_BASICS = list(
  'service_basics',
  `brk mmap munmap mremap mprotect madvise mlock munlock membarrier
   futex futex_waitv clone clone3 rseq set_robust_list get_robust_list set_tid_address gettid sched_yield
   sched_getaffinity sched_getparam sched_getscheduler sched_get_priority_max sched_get_priority_min
   rt_sigaction rt_sigprocmask rt_sigreturn rt_sigtimedwait rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack
   kill tgkill tkill restart_syscall pause
   exit exit_group
   clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time times getrusage
   getpid getppid getuid geteuid getgid getegid getgroups getresuid getresgid getpgrp getpgid getsid
   prctl seccomp arch_prctl prlimit64 getrlimit capget uname sysinfo getcpu getrandom umask getcwd
   read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek close close_range
   fstat newfstatat statx fcntl ioctl dup dup2 dup3 fsync fdatasync ftruncate`,
);

/** The event loop: epoll, eventfd and pipes (also for each Worker thread's own loop). */
export const ASYNC = list(
  'async',
  `epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 eventfd eventfd2 pipe pipe2
   poll ppoll select pselect6 timerfd_create timerfd_settime timerfd_gettime signalfd4`,
);

/** Sockets: TCP, UDP and Unix, client and server, including batched UDP calls and splice(2) (kernel tunnels). */
export const NET_SOCKET_API = list(
  'net_socket_api',
  `socket socketpair bind listen accept accept4 connect shutdown getsockname getpeername getsockopt setsockopt
   sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg sendfile splice`,
);

/** Reading the file system: open (read-only or not: the kernel cannot tell), stat, list, watch. */
export const FS_READ = list(
  'fs_read',
  `open openat openat2 access faccessat faccessat2 stat lstat fstatfs statfs readlink readlinkat getdents getdents64
   fadvise64 chdir fchdir inotify_init1 inotify_add_watch inotify_rm_watch flock`,
);

/** Changing the file system: create, remove, rename, link, change modes and times. */
export const FS_WRITE = list(
  'fs_write',
  `mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat truncate
   chmod fchmod fchmodat chown fchown fchownat lchown utimes utimensat futimesat fallocate copy_file_range`,
);

/**
 * Starting child processes, as graceful restarts do. A child inherits the sandbox, so this
 * also holds what a new Node process needs while it starts (exec, loader, first thread set-up).
 * `io_uring_setup` is not here: the sandbox answers it with ENOSYS and libuv falls back to epoll.
 */
export const CHILD_PROCESS = list(
  'child_process',
  `clone clone3 fork vfork execve execveat wait4 waitid setpgid setsid pidfd_open pidfd_send_signal
   access faccessat faccessat2 readlink readlinkat openat getdents64 statfs fstatfs`,
);

/** Name resolution: `dns.lookup` (getaddrinfo in the thread pool) and c-ares (UDP and TCP). */
export const DNS = list(
  'dns',
  `socket connect sendto recvfrom sendmmsg recvmmsg sendmsg recvmsg getsockname getpeername setsockopt
   getsockopt bind poll ppoll openat close read fstat newfstatat`,
);

/** The lists a Node network service usually needs (no file writes). */
export const NODE_SERVICE = allowList(SERVICE_BASICS, ASYNC, NET_SOCKET_API, FS_READ, DNS);
