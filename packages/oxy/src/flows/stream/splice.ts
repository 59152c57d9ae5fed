/**
 * The kernel fast path of the stream pipeline: a tunnel between two plain TCP sockets that no
 * hook inspects is handed to the native addon, which moves its bytes with splice(2) through a
 * pipe per direction, off the JS heap and without a JS callback per chunk. The result has the
 * same shape and the same close reasons as {@link StreamPump}'s, so the caller cannot tell
 * which ran (apart from speed).
 *
 * Handing over: both sockets stop reading in Node (paused, their handle's `readStop`, and a
 * no-op `_read` so nothing restarts it); whatever Node had already read (the bytes that came
 * with the CONNECT head, an upstream's banner) is written to the other side through Node; once
 * every write Node holds has reached the kernel, the addon takes over duplicates of the two
 * descriptors. At the end the addon has closed its duplicates and the sockets are destroyed
 * through Node, so their handles are released as usual.
 *
 * Falls back (returns null) when the addon is not built, or a side is not a plain TCP socket
 * (TLS, an HTTP/2 stream, a socket from a hook).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { PumpCloseReason, PumpOptions, PumpResult } from './pump.ts';

type Native = typeof import('native');
type FdSpliceT = InstanceType<Native['FdSplice']>;

let native: Native | null = null;
try {
  native = await import('native');
} catch {
  // Named boundary: without the addon (not built, not Linux) tunnels use the JS pump.
  native = null;
}

/** True when the native addon is loaded and tunnels can be spliced. */
export const spliceAvailable: boolean = native !== null;

interface TcpHandle {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
}

function fdOf(s: Duplex): number {
  if (!(s instanceof net.Socket) || (s as { encrypted?: boolean }).encrypted === true) return -1;
  if (s.destroyed || s.connecting) return -1;
  const h = (s as unknown as { _handle?: TcpHandle | null })._handle;
  if (h === null || h === undefined || typeof h.fd !== 'number' || typeof h.readStop !== 'function')
    return -1;
  return h.fd;
}

/** True when both sides are plain TCP sockets the addon can splice. */
export function canSplice(client: Duplex, upstream: Duplex): boolean {
  return native !== null && fdOf(client) >= 0 && fdOf(upstream) >= 0;
}

const noRead = (): void => {};

/** Stops Node reading `s` for good and returns what it had read but nobody consumed. */
function detach(s: net.Socket): Buffer | null {
  s.pause();
  s._read = noRead;
  const h = (s as unknown as { _handle: TcpHandle })._handle;
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
 * Splices `client` ⇄ `upstream` (both must pass {@link canSplice}) until both directions have
 * ended, an error, a timeout, or either socket is destroyed from outside. Never rejects.
 */
export async function spliceTunnel(
  client: Duplex,
  upstream: Duplex,
  options: PumpOptions,
): Promise<PumpResult> {
  const c = client as net.Socket;
  const u = upstream as net.Socket;
  c.allowHalfOpen = true;
  u.allowHalfOpen = true;
  const early = detach(c);
  const banner = detach(u);
  const a = flush(u, early);
  const b = flush(c, banner);
  if (a !== null) await a;
  if (b !== null) await b;
  const run = new SpliceRun(c, u, early?.length ?? 0, banner?.length ?? 0);
  if (c.destroyed || u.destroyed)
    run.settle(c.destroyed ? 'client_reset' : 'upstream_reset', 0, 0, undefined);
  else run.start(options);
  return run.done;
}

/** One spliced tunnel: one object and its bound handlers, no closure per event. */
class SpliceRun {
  readonly done: Promise<PumpResult>;
  #resolve!: (r: PumpResult) => void;
  readonly #c: net.Socket;
  readonly #u: net.Socket;
  readonly #up: number;
  readonly #down: number;
  #splice: FdSpliceT | null = null;
  #idleTimer: NodeJS.Timeout | undefined;
  #lifeTimer: NodeJS.Timeout | undefined;
  #lastTotal = -1;
  #settled = false;

  constructor(c: net.Socket, u: net.Socket, up: number, down: number) {
    this.#c = c;
    this.#u = u;
    this.#up = up;
    this.#down = down;
    this.done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  start(options: PumpOptions): void {
    this.#c.once('close', this.#onClientClose);
    this.#u.once('close', this.#onUpstreamClose);
    try {
      this.#splice = new (native as Native).FdSplice(fdOf(this.#c), fdOf(this.#u), (end) => {
        const reason: PumpCloseReason =
          end.error === undefined
            ? 'done'
            : end.side === 0
              ? 'client_error'
              : end.side === 1
                ? 'upstream_error'
                : 'aborted';
        this.settle(reason, end.bytes0to1, end.bytes1to0, end.error);
      });
    } catch (e) {
      this.settle('aborted', 0, 0, e as Error);
      return;
    }
    if (options.idleTimeoutMs > 0)
      this.#idleTimer = setTimeout(this.#checkIdle, options.idleTimeoutMs).unref();
    if (options.maxLifetimeMs > 0) {
      this.#lifeTimer = setTimeout(this.#stop, options.maxLifetimeMs, 'max_lifetime').unref();
    }
  }

  settle(reason: PumpCloseReason, up: number, down: number, error: Error | undefined): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#lifeTimer);
    this.#c.off('close', this.#onClientClose);
    this.#u.off('close', this.#onUpstreamClose);
    this.#c.destroy();
    this.#u.destroy();
    this.#resolve({ bytesUp: this.#up + up, bytesDown: this.#down + down, reason, error });
  }

  readonly #stop = (reason: PumpCloseReason): void => {
    const [up, down] = this.#splice === null ? [0, 0] : this.#splice.stop();
    this.settle(reason, up, down, undefined);
  };

  readonly #onClientClose = (): void => this.#stop('client_reset');
  readonly #onUpstreamClose = (): void => this.#stop('upstream_reset');

  readonly #checkIdle = (): void => {
    const [up, down] = this.#splice?.bytes() ?? [0, 0];
    if (up + down === this.#lastTotal) {
      this.#stop('idle_timeout');
      return;
    }
    this.#lastTotal = up + down;
    this.#idleTimer?.refresh();
  };
}
