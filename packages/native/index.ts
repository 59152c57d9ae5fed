/**
 * `native`: the Linux system calls Node lacks, in one small N-API addon written in C
 * (src/*.c), built with node-gyp when the package is installed.
 *
 * - `seccomp`: install a syscall filter on every thread;
 * - `tun`: TUN devices with batched, event-loop driven packet I/O;
 * - `seqpacket`: SOCK_SEQPACKET Unix sockets (whole messages);
 * - `passFd`: socket pairs and descriptor passing (SCM_RIGHTS);
 * - `netns`: open TUN devices and sockets inside another (or a new) network namespace;
 * - `FdSplice` / `startSplice`: join two sockets in the kernel (splice(2) through pipes), bytes
 *   never in JS;
 * - `reactorMode`: drive the reactor (the epoll set of splices, accepted tunnels and writers) by
 *   a thread of its own or by the JS loop;
 * - `SocketWriter`: write to a socket from the addon's reactor thread (the bytes copied, the
 *   system call off the JS thread);
 * - `UdpSocket`: UDP sockets read and written in batches (recvmmsg, sendmmsg) that can adopt a
 *   descriptor (graceful restarts, systemd);
 * - `execve`: replace the process image (to start Node again under a filter set up first).
 *
 * Every refused system call throws a `NativeError` with a stable `NATIVE_ERR_<ERRNO>` code and
 * a message saying what was refused and how to allow it. Linux only: importing this package
 * elsewhere throws `NATIVE_ERR_UNSUPPORTED_PLATFORM`.
 */
import { addon } from './src/addon.ts';
import { toNativeError } from './src/errors.ts';

export {
  type AcceptedTunnelTarget,
  type AcceptTarget,
  abortAccepted,
  type ConnectAcceptOptions,
  type ConnectListenerOwner,
  connectAccepted,
  type ListenerOwner,
  releaseAccepted,
  startAccepting,
  startConnectAccepting,
  stopAccepting,
  unpollListener,
} from './src/accept.ts';
export { errnoName } from './src/errno.ts';
export { isNativeError, NativeError } from './src/errors.ts';
export * as h1 from './src/h1.ts';
export * as netns from './src/netns.ts';
export type { FdChannel, FdMessage, SocketPairType } from './src/pass-fd.ts';
export * as passFd from './src/pass-fd.ts';
export type { SeccompAction, SeccompFilter, SeccompRule, ThreadSeccomp } from './src/seccomp.ts';
export * as seccomp from './src/seccomp.ts';
export type {
  SeqpacketListenOptions,
  SeqpacketOptions,
  SeqpacketServer,
  SeqpacketServerOptions,
  SeqpacketSocket,
} from './src/seqpacket.ts';
export * as seqpacket from './src/seqpacket.ts';
export type { SpliceEnd, SpliceOptions, SpliceOwner } from './src/splice.ts';
export {
  FdSplice,
  type ReactorMode,
  reactorMode,
  spliceBytes,
  spliceEnd,
  spliceTotal,
  startSplice,
  startTunnel,
  stopSplice,
  type TunnelTarget,
  trimMemory,
} from './src/splice.ts';
export * as tlsContext from './src/tls.ts';
export type { TunDevice, TunOptions } from './src/tun.ts';
export * as tun from './src/tun.ts';
export {
  formatIpv4,
  formatIpv6,
  type UdpAddressInfo,
  UdpBatch,
  type UdpBindOptions,
  type UdpConnectOptions,
  type UdpOutgoing,
  type UdpSendResult,
  UdpSocket,
  type UdpSocketOptions,
  type UdpStats,
  type UdpTarget,
} from './src/udp.ts';
export { SocketWriter } from './src/writer.ts';

/**
 * Sets TCP_CONGESTION on TCP socket `fd` (a listening socket passes it on to every connection it
 * accepts later). Throws a `NativeError`: `ENOENT` when the kernel has no such algorithm,
 * `EPERM` when it is not in `net.ipv4.tcp_allowed_congestion_control` and the process lacks
 * CAP_NET_ADMIN.
 */
export function setTcpCongestion(fd: number, name: string): void {
  try {
    addon.tcpSetCongestion(fd, name);
  } catch (e) {
    throw toNativeError(e, 'socket', `setting TCP congestion control "${name}"`);
  }
}

/**
 * Sets TCP_QUICKACK on TCP socket `fd`. Off on a listening socket, every connection it accepts
 * holds the ACK of its first bytes for the answer to carry (the kernel sends it after 40 ms
 * without one); on sends ACKs at once. Throws a `NativeError` (`ENOPROTOOPT` on a socket that is
 * not TCP).
 */
export function setTcpQuickAck(fd: number, on: boolean): void {
  try {
    addon.tcpSetQuickAck(fd, on);
  } catch (e) {
    throw toNativeError(e, 'socket', 'setting TCP_QUICKACK');
  }
}

/** TCP_QUICKACK of TCP socket `fd` as the kernel reports it (false: ACKs are held). */
export function tcpQuickAck(fd: number): boolean {
  try {
    return addon.tcpQuickAck(fd);
  } catch (e) {
    throw toNativeError(e, 'socket', 'reading TCP_QUICKACK');
  }
}

/**
 * Replaces the process image (execve(2)); returns only by throwing. Seccomp filters survive,
 * which is the point: a filter installed just before is in force from the new program's first
 * instruction. Descriptors survive if they lack close-on-exec or are in `keepFds` (default
 * stdio, whose close-on-exec libuv may have set; stdio is also made blocking again).
 */
export function execve(
  path: string,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  keepFds: readonly number[] = [0, 1, 2],
): never {
  const pairs = Object.entries(env)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  try {
    return addon.execve(path, [...argv], pairs, [...keepFds]);
  } catch (e) {
    throw toNativeError(e, 'exec', `starting ${path}`);
  }
}
