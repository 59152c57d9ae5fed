/**
 * The addon's whole tunnel for a client that never became a `net.Socket`: a `tcp` endpoint's
 * accepted connection taken straight from the listening handle (`onramps/tcp/raw-accept.ts`).
 * Node's accept path builds a socket per connection (a Duplex with both stream states, event
 * emitter, timers' fields) that a whole tunnel never uses: its bytes move on the reactor thread.
 * Here the accepted libuv handle gives its descriptor to the addon (`startTunnel` duplicates
 * it) and is closed once the upstream connected, as `spliceConnect` releases a socket's handle.
 *
 * It reports like `spliceConnect` (the same result, the same reasons, idle timeout and maximum
 * lifetime through the shared sweeps of `splice.ts`), so the stream runner cannot tell the two
 * apart. Ordering: `onConnected` before the end; the handle is left open when the connect failed
 * (the caller resets it).
 */
import { type Native, native } from './native-addon.ts';
import type { PumpCloseReason, PumpOptions } from './pump.ts';
import {
  IdleSweep,
  LifeQueue,
  noteActivity,
  type SpliceConnectResult,
  type SpliceConnectTarget,
  type TimedRun,
  tunnelTarget,
} from './splice.ts';

/** The libuv TCP handle Node passes to a listening handle's `onconnection` (its internals used here). */
export interface RawTcpHandle {
  readonly fd: number;
  getpeername(out: { address?: string; port?: number; family?: string }): number;
  setNoDelay?(on: boolean): number;
  reset?(cb: () => void): number;
  close(cb?: () => void): void;
}

/** A client for {@link rawTunnel}: its descriptor, and its handle's owner (who closes it once). */
export interface RawClient {
  /** The accepted descriptor (the addon duplicates it). */
  readonly fd: number;
  /** Closes the accepted handle (idempotent): once connected, or at the end. */
  closeHandle(): void;
  /** Told the tunnel once it exists (a drain stops it through that). */
  track(run: RawTunnel): void;
}

/** `onSpliceEnd`'s kind for a tunnel whose connect failed. */
const CONNECT_FAILED = 2;
const IDLE = 0;
const RUNNING = 1;
const SETTLED = 2;

/**
 * Runs the whole tunnel for `handle` to `to` on the addon's thread until it ends, like
 * `spliceConnect` for a socket. Never rejects. The handle is closed unless the connect failed.
 */
export function rawTunnel(
  client: RawClient,
  to: SpliceConnectTarget,
  options: PumpOptions,
  onConnected: (connectMs: number) => void,
): Promise<SpliceConnectResult> {
  return new Promise<SpliceConnectResult>((resolve) => {
    const run = new RawTunnel(client, to.early?.length ?? 0, options, onConnected, resolve);
    client.track(run);
    run.start(to);
  });
}

/** One raw tunnel: the addon's owner object. */
export class RawTunnel implements TimedRun {
  readonly #client: RawClient;
  readonly #early: number;
  readonly #options: PumpOptions;
  #onConnected: ((connectMs: number) => void) | null;
  readonly #resolve: (r: SpliceConnectResult) => void;
  #state = IDLE;
  #idle: IdleSweep | null = null;
  #life: LifeQueue | null = null;
  lastTotal = -1;
  deadline = 0;

  constructor(
    client: RawClient,
    early: number,
    options: PumpOptions,
    onConnected: (connectMs: number) => void,
    resolve: (r: SpliceConnectResult) => void,
  ) {
    this.#client = client;
    this.#early = early;
    this.#options = options;
    this.#onConnected = onConnected;
    this.#resolve = resolve;
  }

  start(to: SpliceConnectTarget): void {
    try {
      (native as Native).startTunnel(this, this.#client.fd, tunnelTarget(to));
    } catch (e) {
      this.#settle('aborted', 0, 0, e as Error, null);
      return;
    }
    this.#state = RUNNING;
  }

  /**
   * A tunnel the addon's reactor thread accepted and started itself (`onramps/tcp/reactor-accept.ts`),
   * now wrapped into this owner: running, as after {@link start}.
   */
  adopt(): void {
    this.#state = RUNNING;
  }

  /** The addon's callback: connected `connectMs` ago (for a short tunnel, just before its end). */
  onSpliceConnected(connectMs: number): void {
    if (this.#state !== RUNNING) return;
    this.#closeHandle();
    noteActivity();
    const o = this.#options;
    if (o.idleTimeoutMs > 0) this.#idle = IdleSweep.join(this, o.idleTimeoutMs);
    if (o.maxLifetimeMs > 0) this.#life = LifeQueue.join(this, o.maxLifetimeMs);
    const cb = this.#onConnected;
    this.#onConnected = null;
    cb?.(connectMs);
  }

  /** The addon's callback: the tunnel ended by itself, or its connect failed. */
  onSpliceEnd(kind: number, b01: number, b10: number, errno: number, side: number): void {
    const n = native as Native;
    this.#state = IDLE;
    if (kind === CONNECT_FAILED) {
      this.#settle('upstream_error', 0, 0, undefined, n.errnoName(errno));
      return;
    }
    const end = n.spliceEnd(kind, b01, b10, errno, side);
    const reason =
      end.error === undefined
        ? 'done'
        : end.side === 0
          ? 'client_error'
          : end.side === 1
            ? 'upstream_error'
            : 'aborted';
    this.#settle(reason, b01, b10, end.error, null);
  }

  /** Ends the tunnel now (a timeout, a drain); before it started, just closes the client. */
  stop(reason: PumpCloseReason): void {
    if (this.#state !== RUNNING) {
      this.#closeHandle();
      return;
    }
    const n = native as Native;
    const [up, down] = n.spliceBytes(this);
    n.stopSplice(this);
    this.#state = IDLE;
    this.#settle(reason, up, down, undefined, null);
  }

  total(): number {
    return this.#state === RUNNING ? (native as Native).spliceTotal(this) : -2;
  }

  #closeHandle(): void {
    this.#client.closeHandle();
  }

  #settle(
    reason: SpliceConnectResult['reason'],
    up: number,
    down: number,
    error: Error | undefined,
    connectError: string | null,
  ): void {
    if (this.#state === SETTLED) return;
    this.#state = SETTLED;
    this.#idle?.leave(this);
    this.#life?.leave(this);
    this.#idle = null;
    this.#life = null;
    // A failed connect leaves the client to the caller (it resets it).
    if (connectError === null) this.#closeHandle();
    noteActivity();
    this.#resolve({ bytesUp: this.#early + up, bytesDown: down, reason, error, connectError });
  }
}
