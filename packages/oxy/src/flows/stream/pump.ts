/**
 * The stream pipeline's pump: moves bytes both ways between a client side and an upstream side
 * until both are done. Every TCP-like unit goes through it: a CONNECT tunnel over HTTP/1.1 or
 * HTTP/2, an `Upgrade`d request, and later PROXY protocol streams and IP flows upgraded to TCP.
 *
 * This is the hot path the throughput benchmarks measure, so: one object per tunnel with its
 * handlers made once; per chunk only a length addition, a `write` and, under backpressure, a
 * `pause`; no timers touched per chunk (the idle check compares byte counters when it fires).
 *
 * Semantics, in order of precedence:
 * - backpressure: a side whose peer holds `SLACK` bytes or more unsent is paused until `drain`;
 * - half-close: one side's end (FIN) becomes `end()` on the other, and the other direction goes on;
 *   with `endOnUpstreamEnd`, the upstream's end instead ends the unit once the client has been
 *   given all of it (`tunnel_half_close: false`);
 * - a side that errors or closes abruptly destroys the other;
 * - `idleTimeoutMs` without a byte either way, or `maxLifetimeMs` (0: none), destroys both;
 * - the pump settles once both sides have closed, with the bytes counted each way.
 */
import type { Duplex } from 'node:stream';

/**
 * A side may carry a function under this key that aborts it when the *other* side failed
 * (reset or error), instead of a plain `destroy()`: an HTTP/2 CONNECT stream is reset with
 * CONNECT_ERROR there (RFC 9113 §8.5), which a destroy would send as NO_ERROR or INTERNAL_ERROR.
 */
export const kAbortForPeer: unique symbol = Symbol('oxy.abortForPeer');

/** A duplex that may say how to abort it when its peer failed. */
type Abortable = Duplex & { [kAbortForPeer]?: () => void };

function abortForPeer(side: Duplex): void {
  const abort = (side as Abortable)[kAbortForPeer];
  if (abort === undefined) side.destroy();
  else abort();
}

/**
 * Bytes a side may hold queued before its source is paused. A stream's own highWaterMark (16 KiB
 * for an HTTP/2 stream) would pause and resume the source on nearly every 64 KiB chunk; this
 * bounds the buffering per tunnel direction instead, still a fixed amount (backpressure holds).
 */
const SLACK = 256 * 1024;

/** Why a pump finished. `done` means both sides closed cleanly (FIN both ways). */
export type PumpCloseReason =
  | 'done'
  | 'client_error'
  | 'upstream_error'
  | 'client_reset'
  | 'upstream_reset'
  | 'idle_timeout'
  | 'max_lifetime'
  | 'aborted';

/** Options of {@link StreamPump}. */
export interface PumpOptions {
  /** Close both sides after this long without a byte either way; 0 disables. */
  readonly idleTimeoutMs: number;
  /** Close both sides after this long in total; 0 disables. */
  readonly maxLifetimeMs: number;
  /**
   * The upstream's end (FIN) ends the unit, cleanly (`done`), once the client has been given all
   * the upstream sent and the FIN; the client's side is not carried on as a half-close
   * (`tunnel_half_close: false`). A client that ends first is carried as a half-close either way.
   */
  readonly endOnUpstreamEnd?: boolean;
}

/** What a finished pump reports. */
export interface PumpResult {
  /** Bytes read from the client and written upstream. */
  readonly bytesUp: number;
  /** Bytes read from upstream and written to the client. */
  readonly bytesDown: number;
  readonly reason: PumpCloseReason;
  /** The first error either side raised, if any. */
  readonly error: Error | undefined;
}

/** A running pump between two duplex streams. Create it, then await `done`. */
export class StreamPump {
  /** Bytes client → upstream so far. */
  bytesUp = 0;
  /** Bytes upstream → client so far. */
  bytesDown = 0;
  /** Settles once both sides have closed; never rejects. */
  readonly done: Promise<PumpResult>;

  readonly #client: Duplex;
  readonly #upstream: Duplex;
  #reason: PumpCloseReason | undefined;
  #error: Error | undefined;
  #clientClosed = false;
  #upstreamClosed = false;
  #resolve!: (r: PumpResult) => void;
  #idleTimer: NodeJS.Timeout | undefined;
  #lifeTimer: NodeJS.Timeout | undefined;
  #lastTotal = -1;
  readonly #idleMs: number;

  constructor(client: Duplex, upstream: Duplex, options: PumpOptions) {
    this.#client = client;
    this.#upstream = upstream;
    this.#idleMs = options.idleTimeoutMs;
    this.done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
    // Half-close is carried across ourselves, so neither side may end its write side on FIN.
    client.allowHalfOpen = true;
    upstream.allowHalfOpen = true;

    const onClientData = (chunk: Buffer): void => {
      this.bytesUp += chunk.length;
      if (!upstream.write(chunk) && upstream.writableLength >= SLACK) client.pause();
    };
    const onUpstreamData = (chunk: Buffer): void => {
      this.bytesDown += chunk.length;
      if (!client.write(chunk) && client.writableLength >= SLACK) upstream.pause();
    };
    client.on('data', onClientData);
    upstream.on('data', onUpstreamData);
    upstream.on('drain', () => client.resume());
    client.on('drain', () => upstream.resume());
    client.on('end', () => upstream.end());
    upstream.on('end', () => {
      if (options.endOnUpstreamEnd === true && !client.readableEnded) {
        // Once the client has all of it, nothing is left to carry: end both, as a clean end.
        client.end(() => {
          if (client.readableEnded) return; // the client ended meanwhile: the usual close
          this.#reason ??= 'done';
          client.destroy();
          upstream.destroy();
        });
      } else client.end();
    });
    client.on('error', (e: Error) => this.#fail('client_error', e));
    upstream.on('error', (e: Error) => this.#fail('upstream_error', e));
    client.on('close', () => this.#onClientClose());
    upstream.on('close', () => this.#onUpstreamClose());

    if (this.#idleMs > 0) this.#idleTimer = setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
    if (options.maxLifetimeMs > 0) {
      this.#lifeTimer = setTimeout(() => this.close('max_lifetime'), options.maxLifetimeMs).unref();
    }
    // A side handed over paused (an upstream proxy's tunnel, an on-ramp) must flow now.
    client.resume();
    upstream.resume();
    // Either side may have been closed, or have read its peer's FIN, before we were attached:
    // its 'end' is then past, and the FIN is carried across here.
    if (client.readableEnded && !upstream.destroyed) upstream.end();
    if (upstream.readableEnded && !client.destroyed) client.end();
    if (client.destroyed) this.#onClientClose();
    if (upstream.destroyed) this.#onUpstreamClose();
  }

  /** Destroys both sides now; `done` settles with `reason` (unless another reason came first). */
  close(reason: PumpCloseReason): void {
    this.#reason ??= reason;
    this.#client.destroy();
    this.#upstream.destroy();
  }

  #checkIdle(): void {
    const total = this.bytesUp + this.bytesDown;
    if (total === this.#lastTotal) {
      this.close('idle_timeout');
      return;
    }
    this.#lastTotal = total;
    this.#idleTimer?.refresh();
  }

  #fail(reason: PumpCloseReason, e: Error): void {
    this.#error ??= e;
    this.#reason ??= reason;
    if (reason === 'upstream_error') abortForPeer(this.#client);
    else if (reason === 'client_error') abortForPeer(this.#upstream);
    this.#client.destroy();
    this.#upstream.destroy();
  }

  #onClientClose(): void {
    if (this.#clientClosed) return;
    this.#clientClosed = true;
    this.#sideClosed(this.#client, this.#upstream, 'client_reset');
  }

  #onUpstreamClose(): void {
    if (this.#upstreamClosed) return;
    this.#upstreamClosed = true;
    this.#sideClosed(this.#upstream, this.#client, 'upstream_reset');
  }

  #sideClosed(side: Duplex, other: Duplex, abrupt: PumpCloseReason): void {
    // A clean close has seen FIN both ways; anything else ends the tunnel for the other side too.
    // An HTTP/2 stream reports both ends finished after a RST_STREAM too: its code tells.
    const rst = (side as { rstCode?: number }).rstCode;
    const clean = side.readableEnded && side.writableFinished && (rst === undefined || rst === 0);
    if (!clean && !other.destroyed) {
      this.#reason ??= abrupt;
      abortForPeer(other);
    }
    if (this.#clientClosed && this.#upstreamClosed) this.#finish();
  }

  #finish(): void {
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#lifeTimer);
    this.#resolve({
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      reason: this.#reason ?? 'done',
      error: this.#error,
    });
  }
}
