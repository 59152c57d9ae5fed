/**
 * Named errors for the addon. Every failed system call becomes a `NativeError` whose code is
 * `NATIVE_ERR_<ERRNO>` (stable: branch on `code`, never on the text) and whose message says what
 * was refused and how to allow it, e.g. "opening /dev/net/tun was refused (EPERM): run as root
 * or inside a user namespace with CAP_NET_ADMIN".
 */

const BRAND = Symbol.for('oxy.native.error');

/** What the caller was doing, so the message can say how to allow it. */
export type NativeOperation =
  | 'tun'
  | 'seccomp'
  | 'listen'
  | 'connect'
  | 'socket'
  | 'send'
  | 'receive'
  | 'fd-passing'
  | 'exec'
  | 'poll'
  | 'splice'
  | 'netns'
  | 'udp';

/** An errno raised by the addon, or the addon being unavailable. */
export class NativeError extends Error {
  /** `NATIVE_ERR_EPERM`, `NATIVE_ERR_ENOENT`, … or `NATIVE_ERR_UNSUPPORTED_PLATFORM` / `NATIVE_ERR_NOT_BUILT`. */
  readonly code: string;
  /** The errno name (`EPERM`), empty when not from a system call. */
  readonly errnoName: string;
  /** The errno number, 0 when not from a system call. */
  readonly errno: number;
  /** The system call that failed (`open`, `ioctl(TUNSETIFF)`, `seccomp_load`). */
  readonly syscall: string;
  readonly [BRAND] = true;

  constructor(code: string, message: string, fields?: { errno: number; errnoName: string; syscall: string }) {
    super(message);
    this.name = 'NativeError';
    this.code = code;
    this.errno = fields?.errno ?? 0;
    this.errnoName = fields?.errnoName ?? '';
    this.syscall = fields?.syscall ?? '';
  }
}

/** True for any `NativeError`, even from another copy of this package. */
export function isNativeError(e: unknown): e is NativeError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
}

const SANDBOX = 'or the syscall sandbox forbids it (see docs/security.md)';

/** How to allow it, by operation and errno; `*` matches any operation. */
const HINTS: Record<string, string> = {
  'tun:EPERM':
    'run as root or inside a user namespace with CAP_NET_ADMIN (unshare --user --net --map-root-user)',
  'tun:EACCES':
    'run as root or inside a user namespace with CAP_NET_ADMIN (unshare --user --net --map-root-user)',
  'tun:ENOENT':
    'the kernel has no /dev/net/tun: load the module (modprobe tun) or pass the device into the container',
  'tun:ENODEV': 'the kernel has no TUN driver: load the module (modprobe tun)',
  'tun:EBUSY':
    'another process holds a device of that name: pick another name, or "tun%d" to let the kernel choose',
  'tun:EINVAL': 'a device of that name exists but is not a TUN device: pick another name',
  'seccomp:EINVAL':
    'the kernel lacks seccomp filters (CONFIG_SECCOMP_FILTER) or an action (SECCOMP_RET_LOG needs Linux 4.14), or a name is misspelt',
  'seccomp:EACCES': 'the process needs CAP_SYS_ADMIN or no_new_privs (the addon sets it before installing)',
  'seccomp:ESRCH':
    'a thread runs under a different filter, so TSYNC failed: install the sandbox once, from the main thread',
  'seccomp:EFAULT': 'the filter program is invalid: report this as a bug',
  'seccomp:ENOMEM': 'the filter is too large (more than 4096 instructions or too many stacked filters)',
  'netns:EPERM':
    'entering or creating a network namespace needs CAP_SYS_ADMIN over it: run as root, or start a child under ' +
    '`unshare --user --net --map-root-user` and pass descriptors back (passFd)',
  'netns:EINVAL': 'the file is not a network namespace (expected /proc/<pid>/ns/net or /run/netns/<name>)',
  'netns:ENOENT': 'no such namespace file: create it first (ip netns add NAME)',
  'listen:EADDRINUSE': 'the socket path exists: remove the stale file or pick another path',
  'listen:EACCES': 'the directory is not writable by this user: pick another path or fix its permissions',
  'listen:ENOENT': 'the directory does not exist: create it first',
  'connect:ENOENT': 'nothing exists at that path: is the server running?',
  'connect:ECONNREFUSED': 'nothing listens at that path: is the server running?',
  'connect:EACCES': 'the socket file is not writable by this user: fix its mode or owner',
  'udp:EADDRINUSE':
    'another socket holds that address and port: pick another port, or set reusePort on every socket sharing it',
  'udp:EADDRNOTAVAIL': 'the address is not one of this host: bind to an address of a local interface',
  'udp:ECONNREFUSED': 'nothing listens on the peer port (ICMP port unreachable)',
  'udp:EHOSTUNREACH': 'the peer host is unreachable (ICMP host unreachable, or no route)',
  'udp:ENETUNREACH': 'there is no route to the peer network',
  'udp:EMSGSIZE':
    'the datagram is larger than the path allows (at most 65,507 bytes over IPv4, less than the MTU without fragments)',
  'udp:EPROTOTYPE': 'the descriptor is not an IPv4 or IPv6 UDP socket',
  'udp:EDESTADDRREQ': 'the socket is not connected: give the datagram an address and a port',
  '*:ENAMETOOLONG':
    'Unix socket paths are limited to 107 bytes: use a shorter path or an abstract name (@name)',
  '*:EMSGSIZE':
    'the message exceeds the socket buffer or the read size: send smaller messages or raise maxMessageSize / net.core.wmem_max',
  '*:EPIPE': 'the peer closed the connection',
  '*:ECONNRESET': 'the peer closed the connection',
  '*:EAGAIN': 'the peer is not reading: the socket buffer is full',
  '*:EMFILE': 'too many open files: raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit)',
  '*:ENFILE': 'the system is out of file descriptors: raise fs.file-max',
  '*:EBADF': 'the descriptor is closed or not open for this use',
  '*:ENOTSOCK': 'the descriptor is not a socket',
  '*:EPERM': `a capability is missing (run as root or in a user namespace that grants it), ${SANDBOX}`,
  '*:EACCES': `permission denied (check ownership and mode), ${SANDBOX}`,
  '*:ENOSYS': `the kernel does not implement this call, ${SANDBOX}`,
};

/** Turns an addon exception into a `NativeError`; other errors (e.g. TypeError) pass through. */
export function toNativeError(e: unknown, op: NativeOperation, what: string): Error {
  if (!(e instanceof Error)) return new Error(String(e));
  const raw = e as Error & { errno?: unknown; code?: unknown; syscall?: unknown };
  if (typeof raw.errno !== 'number' || typeof raw.code !== 'string') return e;
  return errnoError(raw.errno, raw.code, typeof raw.syscall === 'string' ? raw.syscall : '', op, what);
}

/** A `NativeError` for an errno met outside a thrown exception (e.g. a read error on the loop). */
export function errnoError(
  errno: number,
  name: string,
  syscall: string,
  op: NativeOperation,
  what: string,
): NativeError {
  const hint = HINTS[`${op}:${name}`] ?? HINTS[`*:${name}`] ?? `${syscall || 'the system call'} failed`;
  const via = syscall ? ` [${syscall}]` : '';
  return new NativeError(`NATIVE_ERR_${name}`, `${what} was refused (${name})${via}: ${hint}`, {
    errno,
    errnoName: name,
    syscall,
  });
}
