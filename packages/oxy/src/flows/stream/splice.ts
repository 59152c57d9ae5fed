/**
 * The kernel fast path of the stream pipeline: a tunnel between two plain TCP sockets that no
 * hook inspects is handed to the native addon, which moves its bytes with splice(2) through a
 * pipe per direction, off the JS heap and without a JS callback per chunk. The result has the
 * same shape and the same close reasons as {@link StreamPump}'s, so the caller cannot tell
 * which ran (apart from speed and memory).
 *
 * Handing over: both sockets stop reading in Node (paused, their handle's `readStop`, and a
 * no-op `_read` so nothing restarts it); whatever Node had already read (the bytes that came
 * with the CONNECT head, an upstream's banner) is written to the other side through Node; once
 * every write Node holds has reached the kernel, the addon takes over duplicates of the two
 * descriptors.
 *
 * Memory: an idle tunnel should cost little more than the kernel's sockets. Once the splice
 * runs, each socket's Node handle (the libuv TCP handle, its wrap and its descriptor) is closed;
 * the kernel socket stays open through the addon's duplicate, so the peers see nothing. The
 * `net.Socket` objects stay, handle-less but not destroyed, so everything that watches them
 * (the ingress accounting on 'close', a drain's `destroy()`) works as for any socket: their
 * byte counters (`bytesRead`, `bytesWritten`) are topped up with the splice's counts, and they
 * are destroyed (so 'close' fires) only when the tunnel really ends. A `destroy()` from outside
 * stops the splice first (through the socket's own `_destroy`, so before any 'close'
 * listener). There is no timer, promise or closure per tunnel beyond the one promise the
 * caller awaits: idle timeouts are checked by one interval per timeout value, and
 * maximum lifetimes by one timer per lifetime value over a queue in deadline order. A burst of
 * tunnels leaves much freed malloc memory resident (read buffers and handles of the sockets
 * whose handles were closed, between the allocations that stay): once tunnels have stopped
 * starting and ending for a second, it is given back to the kernel (`malloc_trim`).
 *
 * Not used ({@link canSplice} says false, the caller runs the JS pump) when the addon is not
 * built, or a side is not a plain TCP socket (TLS, an HTTP/2 stream, a socket from a hook).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TunnelTarget } from 'native';
import { type Native, native } from './native-addon.ts';
import { isOffloaded, stopOffload, writesFlushed } from './offload.ts';
import type { PumpCloseReason, PumpOptions, PumpResult } from './pump.ts';

/** True when the native addon is loaded and tunnels can be spliced. */
export const spliceAvailable: boolean = native !== null;

interface TcpHandle {
  fd?: number;
  reading?: boolean;
  bytesRead?: number;
  bytesWritten?: number;
  onread?: unknown;
  readStop?(): number;
  close?(): void;
}

/** A socket as seen here: Node's internals this module relies on. */
type NodeSocket = net.Socket & { _handle: TcpHandle | null } & Record<symbol, unknown>;

/** Node's own `kBytesRead` / `kBytesWritten` symbols: what a handle-less socket reports. */
function counterSymbols(): [symbol, symbol] | null {
  const syms = Object.getOwnPropertySymbols(new net.Socket());
  const read = syms.find((s) => s.description === 'kBytesRead');
  const written = syms.find((s) => s.description === 'kBytesWritten');
  return read !== undefined && written !== undefined ? [read, written] : null;
}
/** Null when this Node lacks them: handles then stay open for the whole tunnel. */
const counters = counterSymbols();
const kRun = Symbol('oxy.spliceRun');

function fdOf(s: Duplex): number {
  if (!(s instanceof net.Socket) || (s as { encrypted?: boolean }).encrypted === true) return -1;
  if (s.destroyed || s.connecting) return -1;
  const h = (s as NodeSocket)._handle;
  if (h === null || h === undefined || typeof h.fd !== 'number' || typeof h.readStop !== 'function')
    return -1;
  return h.fd;
}

/** True when both sides are plain TCP sockets the addon can splice. */
export function canSplice(client: Duplex, upstream: Duplex): boolean {
  return native !== null && fdOf(client) >= 0 && fdOf(upstream) >= 0;
}

const noop = (): void => {};

/** Stops Node reading `s` for good and returns what it had read but nobody consumed. */
function detach(s: net.Socket): Buffer | null {
  s.pause();
  s._read = noop;
  const h = (s as NodeSocket)._handle as TcpHandle;
  if (h.reading === true) {
    h.reading = false;
    h.readStop?.();
  }
  return s.readableLength > 0 ? (s.read() as Buffer | null) : null;
}

/** Resolves once every write Node holds for `s` (and `chunk`, if any) reached the kernel. */
function flush(s: net.Socket, chunk: Buffer | null): Promise<void> | null {
  if (chunk === null && s.writableLength === 0) return null;
  return new Promise((resolve) => {
    s.write(chunk ?? Buffer.alloc(0), () => resolve());
  });
}

/**
 * Closes `s`'s Node handle (libuv handle, wrap, descriptor) without destroying the socket: its
 * byte counters move to the socket, as `destroy()` would move them. The addon's duplicate keeps
 * the kernel socket open.
 */
function releaseHandle(s: NodeSocket, keys: [symbol, symbol]): void {
  const h = s._handle as TcpHandle;
  s[keys[0]] = h.bytesRead ?? 0;
  s[keys[1]] = h.bytesWritten ?? 0;
  h.onread = noop;
  h.close?.();
  s._handle = null;
}

function addCount(s: NodeSocket, key: symbol, n: number): void {
  s[key] = (s[key] as number) + n;
}

/**
 * Splices `client` ⇄ `upstream` (both must pass {@link canSplice}) until both directions have
 * ended, an error, a timeout, or either socket is destroyed from outside. Never rejects.
 */
export function spliceTunnel(client: Duplex, upstream: Duplex, options: PumpOptions): Promise<PumpResult> {
  const c = client as NodeSocket;
  const u = upstream as NodeSocket;
  c.allowHalfOpen = true;
  u.allowHalfOpen = true;
  const early = detach(c);
  const banner = detach(u);
  let run!: SpliceRun;
  const done = new Promise<PumpResult>((resolve) => {
    run = new SpliceRun(c, u, early?.length ?? 0, banner?.length ?? 0, resolve);
  });
  const a = flush(u, early);
  const b = flush(c, banner);
  if (a === null && b === null && !isOffloaded(c) && !isOffloaded(u)) run.begin(options);
  else void Promise.all([a, b]).then(() => handOver(c, u, run, options));
  return done;
}

/** Starts the splice once the sockets' offloaded writes (the CONNECT answer, say) are written. */
async function handOver(c: NodeSocket, u: NodeSocket, run: SpliceRun, options: PumpOptions): Promise<void> {
  await Promise.all([writesFlushed(c), writesFlushed(u)]);
  stopOffload(c);
  stopOffload(u);
  run.begin(options);
}

/** Where {@link spliceConnect} connects, and what it writes first. */
export interface SpliceConnectTarget {
  /** A literal IP (no zone) and port. */
  readonly ip: string;
  readonly port: number;
  /** A literal IP of the same family to bind to, or ''. */
  readonly sourceIp: string;
  /** The answer written to the client once connected (the 2xx head). */
  readonly head: Buffer;
  /** Bytes that came after the CONNECT head, written to the upstream once connected. */
  readonly early: Buffer | null;
  readonly connectTimeoutMs: number;
  /** `TunnelTarget.smartConnect`: the handshake's last ACK rides on the client's first bytes. */
  readonly smartConnect: boolean;
  /** `TunnelTarget.endOnUpstreamEnd`: `tunnel_half_close: false`. */
  readonly endOnUpstreamEnd: boolean;
}

/** The addon's form of `to` (its deadline named `timeoutMs`), for `startTunnel`. */
export function tunnelTarget(to: SpliceConnectTarget): TunnelTarget {
  return {
    ip: to.ip,
    port: to.port,
    sourceIp: to.sourceIp,
    head: to.head,
    early: to.early,
    timeoutMs: to.connectTimeoutMs,
    smartConnect: to.smartConnect,
    endOnUpstreamEnd: to.endOnUpstreamEnd,
  };
}

/** The end of a {@link spliceConnect}: the tunnel's, or the connect's failure (an errno name). */
export type SpliceConnectResult = PumpResult & { readonly connectError: string | null };

/**
 * The whole of an unhooked CONNECT tunnel in the addon (`client` must pass {@link canSpliceOne}):
 * the upstream connect, the 2xx head, the early bytes and the splice all run on the reactor
 * thread. `onConnected(connectMs)` is called once connected (the head is on its way; Node's
 * handle of the client is closed then), or just before the end for a tunnel that ends within
 * 50 ms of its connect. If the connect fails (`connectError`, e.g. 'ECONNREFUSED' or
 * 'ETIMEDOUT') nothing was written to the client and its socket is as it was: answer it.
 * Never rejects.
 */
export function spliceConnect(
  client: Duplex,
  to: SpliceConnectTarget,
  options: PumpOptions,
  onConnected: (connectMs: number) => void,
): Promise<SpliceConnectResult> {
  const c = client as NodeSocket;
  c.allowHalfOpen = true;
  // Whatever Node read ahead while the socket waited goes up after the on-ramp's early bytes.
  const held = detach(c);
  const target =
    held === null ? to : { ...to, early: to.early === null ? held : Buffer.concat([to.early, held]) };
  return new Promise<SpliceConnectResult>((resolve) => {
    // The early bytes count as moved up, as when Node writes them (spliceTunnel).
    const run = new SpliceRun(c, null, target.early?.length ?? 0, 0, resolve as (r: PumpResult) => void);
    run.connect(target, options, onConnected);
  });
}

/** True when `client` alone could be spliced (a plain TCP socket and the addon): see {@link spliceConnect}. */
export function canSpliceOne(client: Duplex): boolean {
  return native !== null && fdOf(client) >= 0;
}

/** Quiet time after the last tunnel start or end before freed memory is given back. */
const TRIM_AFTER_MS = 1000;
let trimTimer: NodeJS.Timeout | null = null;

/** A tunnel started or ended: trim once things are quiet (a busy proxy never pays for it). */
export function noteActivity(): void {
  if (trimTimer !== null) trimTimer.refresh();
  else trimTimer = setTimeout(trimNow, TRIM_AFTER_MS).unref();
}

function trimNow(): void {
  trimTimer = null;
  (native as Native).trimMemory();
}

const RUNNING = 1;
const SETTLED = 2;
/** `onSpliceEnd`'s kind for a tunnel whose connect failed. */
const CONNECT_FAILED = 2;

/** One spliced tunnel: the addon's owner (no handle object), with no closure of its own. */
class SpliceRun {
  readonly #c: NodeSocket;
  /** Null for a tunnel the addon connects itself ({@link spliceConnect}). */
  readonly #u: NodeSocket | null;
  /** Bytes Node moved before the splice: up (client → upstream) and down. */
  readonly #up: number;
  readonly #down: number;
  readonly #resolve: (r: PumpResult) => void;
  #state = 0;
  #released = false;
  #idle: IdleSweep | null = null;
  #life: LifeQueue | null = null;
  #options: PumpOptions | null = null;
  /** The answer the addon writes to the client before the tunnel's bytes (for its counter). */
  #headOut = 0;
  #onConnected: ((connectMs: number) => void) | null = null;
  /** Bytes both ways at the last idle sweep (-1: none yet). */
  lastTotal = -1;
  /** When the maximum lifetime ends (performance.now()). */
  deadline = 0;

  constructor(
    c: NodeSocket,
    u: NodeSocket | null,
    up: number,
    down: number,
    resolve: (r: PumpResult) => void,
  ) {
    this.#c = c;
    this.#u = u;
    this.#up = up;
    this.#down = down;
    this.#resolve = resolve;
  }

  /** Starts the addon's tunnel: connect, head, early bytes, splice ({@link spliceConnect}). */
  connect(to: SpliceConnectTarget, options: PumpOptions, onConnected: (connectMs: number) => void): void {
    const c = this.#c;
    const fc = fdOf(c);
    if (fc < 0) {
      this.#settle('client_reset', 0, 0, undefined);
      return;
    }
    try {
      (native as Native).startTunnel(this, fc, tunnelTarget(to));
    } catch (e) {
      this.#settle('aborted', 0, 0, e as Error);
      return;
    }
    this.#state = RUNNING;
    this.#headOut = to.head.length;
    this.#options = options;
    this.#onConnected = onConnected;
    // A destroy() from outside (a drain) ends the tunnel, connecting or not.
    c[kRun] = this;
    c._destroy = destroySpliced;
  }

  /**
   * The addon's callback: the tunnel connected `connectMs` ago, its head is on its way to the
   * client. A short tunnel hears it just before its end (one wake-up for both).
   */
  onSpliceConnected(connectMs: number): void {
    if (this.#state !== RUNNING) return;
    const c = this.#c;
    if (counters !== null) {
      releaseHandle(c, counters);
      this.#released = true;
    }
    noteActivity();
    this.#join(this.#options as PumpOptions);
    const cb = this.#onConnected;
    this.#onConnected = null;
    cb?.(connectMs);
  }

  #join(options: PumpOptions): void {
    if (options.idleTimeoutMs > 0) this.#idle = IdleSweep.join(this, options.idleTimeoutMs);
    if (options.maxLifetimeMs > 0) this.#life = LifeQueue.join(this, options.maxLifetimeMs);
  }

  /** Starts the splice (after Node's own writes reached the kernel). */
  begin(options: PumpOptions): void {
    const c = this.#c;
    const u = this.#u as NodeSocket;
    const fc = fdOf(c);
    const fu = fdOf(u);
    if (fc < 0 || fu < 0) {
      this.#settle(c.destroyed || fc < 0 ? 'client_reset' : 'upstream_reset', 0, 0, undefined);
      return;
    }
    try {
      (native as Native).startSplice(this, fc, fu, { endOnUpstreamEnd: options.endOnUpstreamEnd ?? false });
    } catch (e) {
      this.#settle('aborted', 0, 0, e as Error);
      return;
    }
    this.#state = RUNNING;
    if (counters !== null) {
      releaseHandle(c, counters);
      releaseHandle(u, counters);
      this.#released = true;
    }
    // A destroy() from outside (a drain) stops the splice before 'close' is emitted, so every
    // 'close' listener sees the final byte counts. No listener: an own `_destroy` per socket.
    c[kRun] = this;
    u[kRun] = this;
    c._destroy = destroySpliced;
    u._destroy = destroySpliced;
    noteActivity();
    this.#join(options);
  }

  /** The addon's callback: the splice ended by itself (both FINs, or an error). */
  onSpliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): void {
    this.#state = 0;
    if (kind === CONNECT_FAILED) {
      this.#settle('upstream_error', 0, 0, undefined, (native as Native).errnoName(errno));
      return;
    }
    const end = (native as Native).spliceEnd(kind, b01, b10, errno, side);
    const reason: PumpCloseReason =
      end.error === undefined
        ? 'done'
        : end.side === 0
          ? 'client_error'
          : end.side === 1
            ? 'upstream_error'
            : 'aborted';
    this.#settle(reason, b01, b10, end.error);
  }

  /** Ends the tunnel now with `reason` (a timeout, or a socket destroyed from outside). */
  stop(reason: PumpCloseReason): void {
    if (this.#state !== RUNNING) return;
    const n = native as Native;
    const [up, down] = n.spliceBytes(this);
    n.stopSplice(this);
    this.#state = 0;
    this.#settle(reason, up, down, undefined, null);
  }

  /** True when `s` is this tunnel's client side. */
  isClient(s: NodeSocket): boolean {
    return s === this.#c;
  }

  /** Bytes moved both ways so far (for the idle sweep). */
  total(): number {
    return this.#state === RUNNING ? (native as Native).spliceTotal(this) : -2;
  }

  #settle(
    reason: PumpCloseReason,
    up: number,
    down: number,
    error: Error | undefined,
    connectError: string | null = null,
  ): void {
    if (this.#state === SETTLED) return;
    this.#state = SETTLED;
    this.#idle?.leave(this);
    this.#life?.leave(this);
    this.#idle = null;
    this.#life = null;
    const c = this.#c;
    const u = this.#u;
    if (c[kRun] === this) c[kRun] = undefined;
    if (u !== null && u[kRun] === this) u[kRun] = undefined;
    if (this.#released && counters !== null) {
      // As if Node had moved these bytes: the connection-close statistics read them.
      addCount(c, counters[0], up);
      addCount(c, counters[1], down + this.#headOut);
      if (u !== null) {
        addCount(u, counters[0], down);
        addCount(u, counters[1], up);
      }
    }
    // A failed connect leaves the client to the caller (it answers 502 or 504).
    if (connectError === null) c.destroy();
    else c._destroy = socketDestroy;
    u?.destroy();
    if (this.#released) noteActivity();
    const r = { bytesUp: this.#up + up, bytesDown: this.#down + down, reason, error, connectError };
    this.#resolve(r);
  }
}

const socketDestroy = net.Socket.prototype._destroy;

/** `_destroy` of a spliced socket: a destroy from outside ends the tunnel first. */
function destroySpliced(this: NodeSocket, err: Error | null, cb: (err?: Error | null) => void): void {
  const run = this[kRun] as SpliceRun | undefined;
  if (run !== undefined) run.stop(run.isClient(this) ? 'client_reset' : 'upstream_reset');
  socketDestroy.call(this, err, cb);
}

/** A running tunnel as the idle sweep and the lifetime queue see it (a splice, a raw tunnel). */
export interface TimedRun {
  /** Bytes both ways at the last idle sweep (-1: none yet). */
  lastTotal: number;
  /** When the maximum lifetime ends (performance.now()). */
  deadline: number;
  /** Bytes moved both ways so far. */
  total(): number;
  /** Ends the tunnel now with `reason`. */
  stop(reason: PumpCloseReason): void;
}

/**
 * The idle check of every tunnel with the same idle timeout: one interval of that length. A
 * tunnel whose byte count did not change between two sweeps is closed, so a silent tunnel
 * closes between one and two timeouts after its last byte (as the pump's timer does).
 */
export class IdleSweep {
  static readonly #byMs = new Map<number, IdleSweep>();
  readonly #ms: number;
  readonly #runs = new Set<TimedRun>();
  readonly #timer: NodeJS.Timeout;

  static join(run: TimedRun, ms: number): IdleSweep {
    let sweep = IdleSweep.#byMs.get(ms);
    if (sweep === undefined) {
      sweep = new IdleSweep(ms);
      IdleSweep.#byMs.set(ms, sweep);
    }
    sweep.#runs.add(run);
    return sweep;
  }

  private constructor(ms: number) {
    this.#ms = ms;
    this.#timer = setInterval(sweepIdle, ms, this).unref();
  }

  leave(run: TimedRun): void {
    this.#runs.delete(run);
    if (this.#runs.size > 0) return;
    clearInterval(this.#timer);
    IdleSweep.#byMs.delete(this.#ms);
  }

  sweep(): void {
    for (const run of this.#runs) {
      const total = run.total();
      if (total === run.lastTotal) run.stop('idle_timeout');
      else run.lastTotal = total;
    }
  }
}

function sweepIdle(sweep: IdleSweep): void {
  sweep.sweep();
}

/**
 * The maximum lifetime of every tunnel with the same limit: tunnels join in start order, so
 * deadlines are in order too, and one timer set for the earliest serves them all.
 */
export class LifeQueue {
  static readonly #byMs = new Map<number, LifeQueue>();
  readonly #ms: number;
  readonly #runs = new Set<TimedRun>();
  #timer: NodeJS.Timeout | null = null;

  static join(run: TimedRun, ms: number): LifeQueue {
    let q = LifeQueue.#byMs.get(ms);
    if (q === undefined) {
      q = new LifeQueue(ms);
      LifeQueue.#byMs.set(ms, q);
    }
    run.deadline = performance.now() + ms;
    q.#runs.add(run);
    if (q.#timer === null) q.#arm(run.deadline);
    return q;
  }

  private constructor(ms: number) {
    this.#ms = ms;
  }

  leave(run: TimedRun): void {
    this.#runs.delete(run);
    if (this.#runs.size > 0) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    LifeQueue.#byMs.delete(this.#ms);
  }

  #arm(deadline: number): void {
    this.#timer = setTimeout(expire, Math.max(1, deadline - performance.now()), this).unref();
  }

  expire(): void {
    this.#timer = null;
    const now = performance.now();
    for (const run of this.#runs) {
      if (run.deadline > now) {
        this.#arm(run.deadline);
        return;
      }
      run.stop('max_lifetime');
    }
  }
}

function expire(q: LifeQueue): void {
  q.expire();
}
