/**
 * The JS half of src/accept.c: a listening socket whose connections the addon's reactor thread
 * accepts, connects to one fixed address and carries itself (the whole tunnel of `startTunnel`,
 * without a JS call per connection). JS hears of connections that ended in batches
 * (`ListenerOwner.onRecords`) and adopts the ones that run longer than 50 ms after their connect
 * (`ListenerOwner.onTunnel` returns their `SpliceOwner`).
 *
 * The listening descriptor stays the caller's: the addon works on a duplicate, and
 * {@link unpollListener} takes the original out of libuv's epoll set so that only the reactor
 * thread is woken for new connections. {@link stopAccepting} closes the duplicate (call it when
 * the caller's listening handle closes); the tunnels still running end by themselves or at
 * {@link abortAccepted}.
 */
import { addon, type ConnectListenerOwner, type ListenerOwner } from './addon.ts';
import { toNativeError } from './errors.ts';

export type { ConnectListenerOwner, ListenerOwner } from './addon.ts';

/** Where {@link startAccepting}'s connections go, and how. */
export interface AcceptTarget {
  /** A literal IPv4 or IPv6 address (no zone). */
  readonly ip: string;
  readonly port: number;
  /** A literal IP to bind the upstream sockets to (of the same family), or '' for none. */
  readonly sourceIp: string;
  /** Each connect's deadline in ms (0: none). */
  readonly timeoutMs: number;
  /** Pipe size once a direction splices (see `SpliceOptions.pipeSize`). */
  readonly pipeSize: number;
  /** TCP_NODELAY on accepted clients. */
  readonly noDelay: boolean;
  /** The listening address is a wildcard: records carry each connection's local address. */
  readonly wildcard: boolean;
  /** `TunnelTarget.smartConnect` for every connection. */
  readonly smartConnect: boolean;
  /** `TunnelTarget.endOnUpstreamEnd` for every connection. */
  readonly endOnUpstreamEnd: boolean;
}

/**
 * Accepts `listenFd`'s connections on the reactor thread for `owner` (see the top). Throws a
 * `NativeError` when the descriptor cannot be duplicated, a TypeError on bad arguments.
 */
export function startAccepting(owner: ListenerOwner, listenFd: number, to: AcceptTarget): void {
  try {
    addon.acceptStart(
      owner,
      listenFd,
      to.ip,
      to.port,
      to.sourceIp,
      to.timeoutMs,
      to.pipeSize,
      to.noDelay,
      to.wildcard,
      to.smartConnect,
      to.endOnUpstreamEnd,
    );
  } catch (e) {
    if (e instanceof TypeError) throw e;
    throw toNativeError(e, 'listen', 'accepting on the reactor thread');
  }
}

/** How a connect-mode listener ({@link startConnectAccepting}) works. */
export interface ConnectAcceptOptions {
  /** Pipe size once a direction splices (see `SpliceOptions.pipeSize`). */
  readonly pipeSize: number;
  /** TCP_NODELAY on accepted clients. */
  readonly noDelay: boolean;
  /** The listening address is a wildcard: heads carry each connection's local address. */
  readonly wildcard: boolean;
  /** How long the reactor thread reads a head before handing the connection back (ms, > 0). */
  readonly headTimeoutMs: number;
  /** Each tunnel's upstream handshake ACK waits for the client's first tunneled bytes. */
  readonly smartConnect: boolean;
  /** `TunnelTarget.endOnUpstreamEnd` for every tunnel. */
  readonly endOnUpstreamEnd: boolean;
}

/**
 * Accepts `listenFd`'s connections on the reactor thread for `owner` in connect mode: the reactor
 * reads each request head; complete CONNECT heads go to `owner.onHeads` for a decision, the
 * rest is handed back there too (src/accept-head.c). Throws like {@link startAccepting}.
 */
export function startConnectAccepting(
  owner: ConnectListenerOwner,
  listenFd: number,
  o: ConnectAcceptOptions,
): void {
  try {
    addon.acceptConnectStart(
      owner,
      listenFd,
      o.pipeSize,
      o.noDelay,
      o.wildcard,
      o.headTimeoutMs,
      o.smartConnect,
      o.endOnUpstreamEnd,
    );
  } catch (e) {
    if (e instanceof TypeError) throw e;
    throw toNativeError(e, 'listen', 'accepting on the reactor thread');
  }
}

/** Where {@link connectAccepted} connects, and what it writes first. */
export interface AcceptedTunnelTarget {
  /** A literal IP (no zone) and port. */
  readonly ip: string;
  readonly port: number;
  /** A literal IP of the same family to bind to, or ''. */
  readonly sourceIp: string;
  /** Written to the client once connected (the 2xx head). */
  readonly head: Buffer | null;
  /** Written upstream once connected. */
  readonly early: Buffer | null;
  /** The connect's deadline in ms (0: none). */
  readonly timeoutMs: number;
}

/**
 * The reactor thread connects for the CONNECT head JS had as `fd` (the descriptor is the addon's
 * from now on), answers and carries the tunnel; its end comes in `onConnectRecords` with `id`
 * (a failed connect with the client's descriptor back), or it is adopted (`onConnectTunnel`).
 */
export function connectAccepted(
  owner: ConnectListenerOwner,
  id: number,
  fd: number,
  to: AcceptedTunnelTarget,
): void {
  addon.acceptConnect(owner, id, fd, to.ip, to.port, to.sourceIp, to.head, to.early, to.timeoutMs);
}

/** JS keeps a CONNECT head's descriptor itself (a refusal it answers): see src/accept-head.c. */
export function releaseAccepted(owner: ConnectListenerOwner): void {
  addon.acceptRelease(owner);
}

/** Takes `fd` out of the JS thread's libuv epoll set; false when it is not (yet) in it. */
export function unpollListener(fd: number): boolean {
  return addon.acceptUnpoll(fd);
}

/** Stops accepting for `owner`; returns how many tunnels JS has not heard of yet. */
export function stopAccepting(owner: ListenerOwner | ConnectListenerOwner): number {
  return addon.acceptStop(owner);
}

/** Ends every tunnel of `owner` JS has not heard of yet (their records follow in a batch). */
export function abortAccepted(owner: ListenerOwner | ConnectListenerOwner): void {
  addon.acceptAbort(owner);
}
