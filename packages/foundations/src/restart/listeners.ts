/**
 * Opens a service's listening sockets so that they survive restarts.
 *
 * `listen(name, addr, server)` first looks for an inherited socket (restart handover or
 * systemd), by name and then by address, and serves on it as it is; only when none fits
 * (matching.ts: a new config may move an endpoint) does it bind afresh. Every listening
 * server is remembered so that a restart can hand the very same kernel sockets to the new
 * process: nothing queued in an accept backlog is lost, and clients never see "connection
 * refused". Once every endpoint is open, `closeUnclaimed()` closes the inherited sockets that
 * no endpoint took, so an endpoint the new config dropped or moved refuses connections.
 *
 * Unix socket paths are bound under a temporary name and renamed into place. That makes
 * the file appear atomically with its final mode, and, as a bonus, keeps Node from
 * unlinking the real path when the old process closes its server during a restart (Node
 * unlinks the path it bound, which by then is the temporary one, already gone).
 *
 * Every accepted connection is counted in a `TaskTracker`, so draining can wait for them
 * and close the stragglers at the deadline.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { formatListenAddr, type ListenAddr } from '../settings/net.ts';
import { DatagramListeners } from './datagrams.ts';
import type { InheritedDatagram, InheritedSocket, Unclaimed } from './inherited.ts';
import { InheritedListeners } from './inherited-listeners.ts';
import type { SocketTransport } from './matching.ts';
import { TaskTracker } from './task-tracker.ts';

/** A server opened through `Listeners.listen`, with what a restart needs to pass it on. */
export interface ActiveListener {
  readonly name: string;
  /** The address actually bound (port 0 replaced by the real port). */
  readonly addr: ListenAddr;
  /** The address the caller asked for (host names and port 0 as written), for the next process to compare. */
  readonly configured: ListenAddr;
  /** `stream` for `listen` and `hold`, `seqpacket` for `listenWith`. */
  readonly transport: Exclude<SocketTransport, 'datagram'>;
  /** The server accepting on it; null for a socket only held (`Listeners.hold`) for workers. */
  readonly server: net.Server | null;
  /** The listening descriptor, handed on at a restart. */
  readonly fd: number;
  /**
   * Where it came from: a systemd socket unit (directly, or through earlier processes), the
   * previous process, or bound here.
   */
  readonly origin: 'systemd' | 'handover' | 'bound';
  /**
   * For a socket from systemd, its `FileDescriptorName=` (null: the unit gave none), which may
   * differ from `name` when the endpoint took it by address. The next process matches the socket
   * by this name, as a fresh start does, not by the endpoint's.
   */
  readonly systemdName?: string | null;
}

/**
 * Asked of the kernel for a socket from systemd: more than any `net.core.somaxconn`, which caps
 * it, as it capped the unit's `Backlog=` (systemd's default is SOMAXCONN).
 */
const SYSTEMD_BACKLOG = 0x7fffffff;

/**
 * The backlog to listen on `inherited` with. Node calls listen() again on an inherited
 * descriptor, which sets its queue length anew (to 511 unless told), so it must be given. One
 * handed over gets the settings' `backlog`, as when it was bound. Linux gives Node no way to
 * read the backlog a systemd unit chose (only netlink sock_diag, or TCP_INFO for TCP, show it),
 * so one from systemd gets the most the kernel allows: never less than the unit's, though a
 * unit's `Backlog=` below `net.core.somaxconn` is raised to it.
 */
function backlogFor(inherited: InheritedSocket, backlog: number | undefined): number | undefined {
  return inherited.source === 'systemd' ? SYSTEMD_BACKLOG : backlog;
}

/** `systemdName` for a socket claimed from `inherited` (nothing unless systemd made it). */
function systemdNameOf(inherited: InheritedSocket | undefined): { systemdName?: string | null } {
  return inherited?.source === 'systemd' ? { systemdName: inherited.name } : {};
}

/**
 * A listening socket that something other than `net.Server` accepts on (a SOCK_SEQPACKET
 * listener from the addon), as `Listeners.listenWith`'s `open` returns it.
 */
export interface ForeignListener {
  /** The listening descriptor, handed on at a restart. */
  readonly fd: number;
  /** Stops accepting and closes this process's descriptor (the next process's copy lives on). */
  stopAccepting(): void;
}

/** Options for `Listeners.listen`. */
export interface ListenOptions {
  /** File mode for a Unix socket bound here (e.g. `0o600`); default from the umask. */
  readonly mode?: number;
  /** Do not count this server's connections in the tracker (e.g. the restart socket). */
  readonly untracked?: boolean;
  /**
   * Accept queue length, for a socket bound here and for one handed over by the previous
   * process (default Node's 511); a socket from systemd keeps at least the unit's `Backlog=`.
   */
  readonly backlog?: number;
}

/** The descriptor behind a listening server, read from Node's handle. */
export function serverFd(server: net.Server): number {
  const handle = (server as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new FoundationsError(FND_ERR.LISTEN, 'server has no listening descriptor (is it listening?)');
  }
  return fd;
}

/** Every listening socket of the process and every connection accepted on them. */
export class Listeners {
  /** Connections accepted on tracked listeners; draining waits on it. */
  readonly connections: TaskTracker;
  /** UDP sockets (`datagrams.bind(name, addr)`), handed on at a restart like the listeners. */
  readonly datagrams: DatagramListeners;
  readonly #inherited: InheritedListeners;
  readonly #active: ActiveListener[] = [];
  /** Open accepted connections: Node sockets, and foreign ones from `track`. */
  readonly #sockets = new Set<{ destroy(): void }>();
  readonly #foreign = new Map<ActiveListener, ForeignListener>();

  /** `inherited` and `datagrams` come from `parseSystemdEnv` / `parseHandoverEnv` (see `startLifecycle`). */
  constructor(
    inherited: readonly InheritedSocket[] = [],
    connections: TaskTracker = new TaskTracker(),
    datagrams: readonly InheritedDatagram[] = [],
  ) {
    this.#inherited = new InheritedListeners(inherited);
    this.connections = connections;
    this.datagrams = new DatagramListeners(
      datagrams,
      (name) => this.#inherited.claimSystemdDatagram(name),
      (s) => this.#inherited.release(s),
    );
  }

  /** The servers opened so far, in order. */
  get active(): readonly ActiveListener[] {
    return this.#active;
  }

  /** Inherited sockets no endpoint has claimed (yet). */
  get unused(): readonly InheritedSocket[] {
    return this.#inherited.unused;
  }

  /** Connections currently open on tracked listeners. */
  get openConnections(): number {
    return this.#sockets.size;
  }

  /**
   * Makes `server` listen for endpoint `name` at `addr`: on an inherited stream socket with the
   * same name whose address fits `addr` (port 0 keeps the inherited port; a systemd socket named
   * so fits whatever its address), else one bound at exactly `addr`, else on a fresh socket.
   * Resolves once it accepts. Errors are `FND_ERR_LISTEN` naming the endpoint and address.
   */
  async listen<S extends net.Server>(
    name: string,
    addr: ListenAddr,
    server: S,
    opts: ListenOptions = {},
  ): Promise<S> {
    const inherited = this.#inherited.claim(name, addr, 'stream');
    const where = `endpoint "${name}" (${formatListenAddr(addr)})`;
    try {
      if (inherited)
        await listenOn(server, { fd: inherited.fd, backlog: backlogFor(inherited, opts.backlog) });
      else if (addr.kind === 'tcp')
        await listenOn(server, { host: addr.host, port: addr.port, backlog: opts.backlog });
      else await bindUnix(server, addr.path, opts.mode, opts.backlog);
    } catch (e) {
      if (inherited) this.#inherited.release(inherited);
      const code = (e as NodeJS.ErrnoException).code;
      const held = code === 'EADDRINUSE' ? this.#inherited.heldOnPort(addr) : '';
      throw new FoundationsError(
        FND_ERR.LISTEN,
        `${where}: cannot listen: ${code ?? (e as Error).message}${held}`,
        { cause: e, userError: code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' },
      );
    }
    const bound = boundAddr(server, addr);
    this.#active.push({
      name,
      addr: bound,
      configured: addr,
      transport: 'stream',
      server,
      fd: serverFd(server),
      origin: inherited ? inherited.source : 'bound',
      ...systemdNameOf(inherited),
    });
    if (!opts.untracked) server.on('connection', (socket: net.Socket) => this.#track(socket));
    return server;
  }

  /**
   * Opens endpoint `name`'s socket through `open`, for a socket Node's `net` cannot listen on
   * (a SOCK_SEQPACKET listener): `open(fd)` gets the inherited SEQPACKET descriptor that fits, by
   * the rules of `listen`, and must listen on it as it is, or gets null and binds at `addr` itself. Recorded
   * like `listen`'s servers, so a restart hands the same kernel socket on; `stopAccepting()`
   * calls the listener's. Connections it accepts are counted through `track`. Errors `open`
   * throws become `FND_ERR_LISTEN` naming the endpoint and address.
   */
  listenWith(
    name: string,
    addr: ListenAddr,
    open: (inheritedFd: number | null) => ForeignListener,
  ): ActiveListener {
    const inherited = this.#inherited.claim(name, addr, 'seqpacket');
    let listener: ForeignListener;
    try {
      listener = open(inherited?.fd ?? null);
    } catch (e) {
      if (inherited) this.#inherited.release(inherited);
      const code = (e as NodeJS.ErrnoException).code ?? '';
      throw new FoundationsError(
        FND_ERR.LISTEN,
        `endpoint "${name}" (${formatListenAddr(addr)}): cannot listen: ${(e as Error).message}`,
        { cause: e, userError: /EADDRINUSE|EACCES|EADDRNOTAVAIL|EEXIST|EPROTOTYPE/.test(code) },
      );
    }
    const active: ActiveListener = {
      name,
      addr,
      configured: addr,
      transport: 'seqpacket',
      server: null,
      fd: listener.fd,
      origin: inherited ? inherited.source : 'bound',
      ...systemdNameOf(inherited),
    };
    this.#active.push(active);
    this.#foreign.set(active, listener);
    return active;
  }

  /**
   * Counts a connection accepted outside `net` (one from a `listenWith` listener) like the
   * sockets `listen` accepts: draining waits for it, and at the deadline `conn.destroy()` runs.
   * Returns the function to call once when it has ended.
   */
  track(conn: { destroy(): void }): () => void {
    this.#sockets.add(conn);
    const token = this.connections.closed ? undefined : this.connections.start();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#sockets.delete(conn);
      token?.done();
    };
  }

  /**
   * Claims endpoint `name`'s socket for a process that does not accept on it itself (a
   * supervisor whose worker processes do): an inherited socket as it is, else a TCP or Unix
   * socket bound at `addr` that no event loop here polls. It is not listening yet; the first
   * worker's `listen({ fd })` makes it listen, and it keeps listening (its accept queue too)
   * for as long as this process holds it, workers coming and going. Recorded with
   * `server: null`, so a restart hands it on like any other. Throws `FND_ERR_LISTEN`.
   */
  async hold(name: string, addr: ListenAddr): Promise<ActiveListener> {
    const inherited = this.#inherited.claim(name, addr, 'stream');
    const mine = { name, configured: addr, transport: 'stream', server: null } as const;
    let held: ActiveListener;
    if (inherited) {
      const addrAndFd = { addr: inherited.addr ?? addr, fd: inherited.fd };
      held = { ...mine, ...addrAndFd, origin: inherited.source, ...systemdNameOf(inherited) };
    } else {
      held = { ...mine, ...(await bindUnpolled(name, addr)), origin: 'bound' };
    }
    this.#active.push(held);
    return held;
  }

  /**
   * Stops accepting on every listener and, unless `datagrams` is false, reading on every UDP
   * socket; the kernel sockets stay open in any process we handed them to (and the UDP ones here
   * too, for replies). A shutdown keeps reading UDP: no other process reads the sockets, and the
   * app's own flows on them (sessions the lifecycle cannot see) go on until they end or the drain
   * does; turning new ones away is the app's part.
   */
  stopAccepting(opts: { readonly datagrams?: boolean } = {}): void {
    if (opts.datagrams !== false) this.datagrams.stopReading();
    for (const l of this.#active) {
      // net.Server.prototype.close, not http.Server#close: the latter also closes idle
      // keep-alive connections, racing with clients that are sending their next request.
      if (l.server?.listening) net.Server.prototype.close.call(l.server);
      this.#foreign.get(l)?.stopAccepting();
    }
  }

  /** Destroys every connection still open: the end of a drain. */
  destroyConnections(): void {
    for (const s of this.#sockets) s.destroy();
  }

  /**
   * Closes this process's copy of every inherited socket that no endpoint took (UDP ones are
   * `datagrams.closeUnclaimed()`'s); systemd's stay open. See `InheritedListeners.closeUnclaimed`.
   * Call it once every endpoint is open (`Lifecycle.ready` does, after the restart socket).
   */
  closeUnclaimed(): Unclaimed<InheritedSocket> {
    return this.#inherited.closeUnclaimed();
  }

  #track(socket: net.Socket): void {
    // A connection accepted after the tracker closed (the race between close and the last
    // accept) is still served and still force-closed at the deadline, just not awaited.
    socket.once('close', this.track(socket));
  }
}

/** What Node's `net._createServerHandle` returns: a bound libuv handle, not polled until `listen`. */
interface BoundHandle {
  readonly fd: number;
  getsockname?(out: { address?: string; port?: number }): number;
}

/**
 * Binds without listening or polling. Node has no public call for that; `net._createServerHandle`
 * is what Node's own cluster module uses for the same purpose (`SCHED_NONE`). The handle is kept
 * referenced by the caller's `ActiveListener` only through its fd, and never closed here: the
 * socket lives as long as the process.
 */
async function bindUnpolled(name: string, addr: ListenAddr): Promise<{ addr: ListenAddr; fd: number }> {
  const create = (net as unknown as { _createServerHandle?: (...a: unknown[]) => BoundHandle | number })
    ._createServerHandle;
  const where = `endpoint "${name}" (${formatListenAddr(addr)})`;
  if (typeof create !== 'function')
    throw new FoundationsError(FND_ERR.LISTEN, `${where}: this Node cannot bind without listening`);
  if (addr.kind === 'unix') {
    const existing = fs.lstatSync(addr.path, { throwIfNoEntry: false });
    if (existing?.isSocket() && !(await unixSocketLive(addr.path))) fs.rmSync(addr.path, { force: true });
  }
  const handle =
    addr.kind === 'tcp'
      ? create(addr.host, addr.port, net.isIPv6(addr.host) ? 6 : 4, undefined, 0)
      : create(addr.path, -1, -1, undefined, 0);
  if (typeof handle === 'number') {
    const code = errnoCode(handle);
    throw new FoundationsError(FND_ERR.LISTEN, `${where}: cannot bind: ${code}`, {
      userError: code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL',
    });
  }
  keepAlive.push(handle); // a collected handle would close the descriptor
  if (addr.kind === 'unix') return { addr, fd: handle.fd };
  const out: { address?: string; port?: number } = {};
  handle.getsockname?.(out);
  if (!out.port) {
    // libuv defers EADDRINUSE from bind to listen: an unbound socket here means bind failed.
    (handle as { close?: () => void }).close?.();
    keepAlive.pop();
    throw new FoundationsError(FND_ERR.LISTEN, `${where}: cannot bind: EADDRINUSE`, { userError: true });
  }
  return {
    addr: { kind: 'tcp', host: out.address ?? addr.host, port: out.port ?? addr.port },
    fd: handle.fd,
  };
}

const keepAlive: BoundHandle[] = [];

function errnoCode(negErrno: number): string {
  try {
    return util.getSystemErrorName(negErrno);
  } catch {
    return `errno ${-negErrno}`;
  }
}

function listenOn(server: net.Server, options: net.ListenOptions & { fd?: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    const listening = (): void => {
      server.off('error', onError);
      resolve();
    };
    // Node reads `options.backlog` for a host or path but not for an fd, where only the
    // separate argument counts.
    if (options.fd === undefined) server.listen(options, listening);
    else server.listen({ fd: options.fd }, options.backlog, listening);
  });
}

function boundAddr(server: net.Server, requested: ListenAddr): ListenAddr {
  const a = server.address();
  if (a !== null && typeof a === 'object') return { kind: 'tcp', host: a.address, port: a.port };
  if (typeof a === 'string' && requested.kind === 'unix') return requested;
  return requested;
}

/** True when something accepts connections at `socketPath`. */
export function unixSocketLive(socketPath: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    const timer = setTimeout(() => {
      c.destroy();
      resolve(true); // it exists and did not refuse: treat as alive rather than steal it
    }, timeoutMs);
    c.once('connect', () => {
      clearTimeout(timer);
      c.destroy();
      resolve(true);
    });
    c.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/**
 * Binds a Unix socket at `socketPath` atomically: refuses when a live server is there,
 * replaces a stale socket file, never replaces anything that is not a socket.
 */
async function bindUnix(
  server: net.Server,
  socketPath: string,
  mode: number | undefined,
  backlog: number | undefined,
): Promise<void> {
  const existing = fs.lstatSync(socketPath, { throwIfNoEntry: false });
  if (existing) {
    if (!existing.isSocket()) {
      throw Object.assign(new Error(`${socketPath} exists and is not a socket`), { code: 'EEXIST' });
    }
    if (await unixSocketLive(socketPath)) {
      throw Object.assign(new Error(`another process listens on ${socketPath}`), { code: 'EADDRINUSE' });
    }
  }
  const tmp = path.join(path.dirname(socketPath), `.${path.basename(socketPath)}.${process.pid}.tmp`);
  fs.rmSync(tmp, { force: true });
  // The umask narrows the mode at bind time, so no one can connect in the moment before
  // chmod. listen() binds a path synchronously, so the umask is restored at once.
  const previous = mode === undefined ? undefined : process.umask(0o777 & ~mode);
  let listening: Promise<void>;
  try {
    listening = listenOn(server, { path: tmp, backlog });
  } finally {
    if (previous !== undefined) process.umask(previous);
  }
  await listening;
  if (mode !== undefined) fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, socketPath);
}
