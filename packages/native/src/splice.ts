/**
 * The JS half of splice.c: joining two connected stream sockets in the kernel. Bytes go
 * socket → pipe → socket with splice(2), driven by the addon's reactor: an epoll set and a thread
 * of its own per event loop, so neither the bytes nor the system calls that move them touch the
 * JS thread; only the end comes back to it (`onSpliceEnd`, on the loop). Half-close is carried
 * across (EOF on one side becomes shutdown(SHUT_WR) on the other); the splice ends once both
 * directions have ended, or at the first error.
 *
 * The descriptors stay the caller's: the addon works on duplicates and closes those itself, so
 * the caller may close its own as soon as the splice has started (the sockets stay open through
 * the duplicates; closing a duplicate sends nothing to the peer). The caller must stop reading
 * the originals before starting and must not read or write them while the splice runs.
 *
 * Two forms:
 * - `startSplice(owner, …)`: the splicer is wrapped into an object of the caller's (no handle
 *   object, closure or async resource per splice), whose `onSpliceEnd` the addon calls once.
 *   For callers that hold many idle splices (a proxy's tunnels).
 * - `FdSplice`: a self-contained object with an end callback.
 */
import { addon, type SpliceOwner } from './addon.ts';
import { errnoName } from './errno.ts';
import { errnoError, type NativeError, toNativeError } from './errors.ts';

export type { SpliceOwner } from './addon.ts';

/** How a splice ended. Bytes are counted as read from each side. */
export interface SpliceEnd {
  /** Bytes read from the first descriptor and written to the second. */
  readonly bytes0to1: number;
  /** Bytes read from the second descriptor and written to the first. */
  readonly bytes1to0: number;
  /** The first error, or undefined when both directions ended with EOF. */
  readonly error: NativeError | undefined;
  /** Which descriptor raised `error`: 0, 1, or -1 (neither: e.g. no pipe could be made). */
  readonly side: 0 | 1 | -1;
}

/** Options of {@link startSplice} and {@link FdSplice}. */
export interface SpliceOptions {
  /**
   * Size of each direction's pipe in a long transfer (F_SETPIPE_SZ, best effort; up to
   * /proc/sys/fs/pipe-max-size). Larger pipes move more per system call. Default 1 MiB. Pipes
   * are taken on a direction's first byte (idle splices hold none) at the kernel's default size,
   * grown to 256 KiB (or this size if smaller) after the direction moved 1 MiB (short tunnels
   * never pay for the resize), and to this size after 16 MiB, for at most 32 pipes of the
   * process at once (an unprivileged user's pipes share 64 MiB). A pipe that ends empty and was
   * never grown is kept for the next splice (up to 256 per thread).
   */
  readonly pipeSize?: number;
  /**
   * The second descriptor's (the upstream's) end of stream ends the splice once what it sent, and its FIN, are out to the
   * client, with nothing of the client's unread; the client's later bytes are refused (RST), as
   * nginx stream's `proxy_half_close off`. Otherwise (a queue still draining, unread bytes) and
   * by default, the client's side is carried on as a half-close until the client ends it too.
   */
  readonly endOnUpstreamEnd?: boolean;
}

const DEFAULT_PIPE = 1024 * 1024;

/**
 * Starts splicing `fd0` ⇄ `fd1` on behalf of `owner`, whose `onSpliceEnd` the addon calls once
 * when the splice ends by itself (decode its arguments with {@link spliceEnd}); not after
 * {@link stopSplice}. An owner runs one splice at a time. Throws a `NativeError` when a
 * descriptor cannot be duplicated or watched, a TypeError on bad arguments.
 */
export function startSplice(owner: SpliceOwner, fd0: number, fd1: number, options: SpliceOptions = {}): void {
  try {
    addon.spliceStart(fd0, fd1, options.pipeSize ?? DEFAULT_PIPE, owner, options.endOnUpstreamEnd ?? false);
  } catch (e) {
    if (e instanceof TypeError) throw e;
    throw toNativeError(e, 'splice', 'splicing two sockets');
  }
}

/** Bytes `owner`'s running splice moved so far: [fd0 → fd1, fd1 → fd0]. Throws if none runs. */
export function spliceBytes(owner: SpliceOwner): [number, number] {
  return addon.spliceBytes(owner);
}

/** Bytes `owner`'s running splice moved so far, both ways together. Throws if none runs. */
export function spliceTotal(owner: SpliceOwner): number {
  return addon.spliceTotal(owner);
}

/**
 * Ends `owner`'s running splice now (its duplicates and pipes are closed, bytes still in a
 * pipe are lost); `onSpliceEnd` is not called. Returns true for a tunnel ({@link startTunnel})
 * that had not connected yet: nothing was written to its client. Throws if none runs.
 */
export function stopSplice(owner: SpliceOwner): boolean {
  return addon.spliceStop(owner);
}

/** Where {@link startTunnel} connects, and what it writes first. */
export interface TunnelTarget {
  /** A literal IPv4 or IPv6 address (no zone). */
  readonly ip: string;
  readonly port: number;
  /** A literal IP to bind the upstream socket to (of the same family), or '' for none. */
  readonly sourceIp: string;
  /** Written to the client once connected, before any spliced byte (the 2xx answer). */
  readonly head: Buffer | null;
  /** Written to the upstream once connected, before any spliced byte (bytes that came after the CONNECT head). */
  readonly early: Buffer | null;
  /** The connect's deadline in ms (0: none); past it the tunnel ends with kind 2, ETIMEDOUT. */
  readonly timeoutMs: number;
  /**
   * When the client's first bytes go with the connect (a tunnel with no `head` or `early`, whose
   * client speaks first), the handshake's last ACK rides on them instead of going alone
   * (TCP_QUICKACK off during the connect; HAProxy's tcp-smart-connect). A client with nothing
   * to send gets a plain ACK at once. Default false.
   */
  readonly smartConnect?: boolean;
  /**
   * The upstream's end of stream ends the tunnel once what it sent, and its FIN, are out to the
   * client, with nothing of the client's unread; the client's later bytes are refused (RST), as
   * nginx stream's `proxy_half_close off`. Otherwise (a queue still draining, unread bytes) and
   * by default, the client's side is carried on as a half-close until the client ends it too.
   */
  readonly endOnUpstreamEnd?: boolean;
}

/**
 * The whole of a CONNECT tunnel on the addon's reactor thread: connects to `to`, writes its
 * head and early bytes, then splices `clientFd` (duplicated; the caller keeps its own, and must
 * not read or write it meanwhile) ⇄ the upstream. `owner.onSpliceConnected(connectMs)` comes
 * once connected (with the end, if the tunnel ends within 50 ms of its connect); `onSpliceEnd` at the end, with kind 2 and the errno if the connect failed (nothing
 * was written to the client then). Throws a TypeError on bad arguments (an address that is not
 * a literal IP), a `NativeError` when the client's descriptor cannot be duplicated.
 */
export function startTunnel(
  owner: SpliceOwner,
  clientFd: number,
  to: TunnelTarget,
  options: SpliceOptions = {},
): void {
  try {
    addon.tunnelStart(
      owner,
      clientFd,
      to.ip,
      to.port,
      to.sourceIp,
      to.head,
      to.early,
      to.timeoutMs,
      options.pipeSize ?? DEFAULT_PIPE,
      to.smartConnect ?? false,
      to.endOnUpstreamEnd ?? false,
    );
  } catch (e) {
    if (e instanceof TypeError) throw e;
    throw toNativeError(e, 'splice', 'starting a tunnel');
  }
}

/**
 * Gives the pages of free malloc memory back to the kernel (glibc `malloc_trim(0)`); true if
 * any were released. A burst of connections leaves much freed memory resident between the
 * allocations that stay (idle tunnels); this returns it. Takes a few milliseconds on a large
 * heap: call it when the process has gone quiet, not per connection.
 */
export function trimMemory(): boolean {
  return addon.trimMemory();
}

/** How the addon's reactor (the epoll set of splices, accepted tunnels and writers) is driven. */
export type ReactorMode = 'thread' | 'inline';

/**
 * Makes this JS thread's reactor now, driven by a thread of its own (`thread`, the default
 * otherwise) or by the JS loop (`inline`: no second thread, no wake-up crossing threads; for a
 * process whose JS has nothing to do per connection). A reactor already made keeps its mode,
 * and `OXY_REACTOR` (`thread` or `inline`), when set, wins. Returns the mode in use; throws a
 * `NativeError` when the epoll set or the thread cannot be made.
 */
export function reactorMode(mode: ReactorMode): ReactorMode {
  try {
    return addon.reactorMode(mode);
  } catch (e) {
    throw toNativeError(e, 'splice', 'making the reactor');
  }
}

/** Decodes the arguments of `onSpliceEnd`. */
export function spliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): SpliceEnd {
  const error =
    kind === 0 ? undefined : errnoError(errno, errnoName(errno), 'splice', 'splice', 'splicing a socket');
  return { bytes0to1: b01, bytes1to0: b10, error, side: side === 0 || side === 1 ? side : -1 };
}

/** A running splice between two socket descriptors, with an end callback. */
export class FdSplice implements SpliceOwner {
  #running = false;
  readonly #onEnd: (end: SpliceEnd) => void;

  /** Starts splicing `fd0` ⇄ `fd1`; `onEnd` is called once, unless `stop()` came first. */
  constructor(fd0: number, fd1: number, onEnd: (end: SpliceEnd) => void, options: SpliceOptions = {}) {
    this.#onEnd = onEnd;
    startSplice(this, fd0, fd1, options);
    this.#running = true;
  }

  /** The addon's entry point (see {@link SpliceOwner}); not for callers. */
  onSpliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): void {
    this.#running = false;
    this.#onEnd(spliceEnd(kind, b01, b10, errno, side));
  }

  /** True until the end callback ran or `stop()` was called. */
  get running(): boolean {
    return this.#running;
  }

  /** Bytes moved so far: [fd0 → fd1, fd1 → fd0]; [0, 0] once ended. */
  bytes(): [number, number] {
    return this.#running ? spliceBytes(this) : [0, 0];
  }

  /**
   * Ends the splice now (its duplicates and pipes are closed, bytes still in a pipe are lost);
   * the end callback is not called. Returns the bytes moved, as {@link bytes}.
   */
  stop(): [number, number] {
    if (!this.#running) return [0, 0];
    const b = spliceBytes(this);
    stopSplice(this);
    this.#running = false;
    return b;
  }
}
