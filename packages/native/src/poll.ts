/**
 * `Poller`: the JS half of poll.c. It watches one owned, non-blocking descriptor on the event
 * loop (uv_poll, never the thread pool) and turns the addon's `(kind, value)` callbacks into
 * method calls on a sink. It also keeps a write queue: batched writes go straight to the
 * kernel, and whatever did not fit waits for writability, in order.
 *
 * With `reuse`, reads go straight into one slab this poller keeps: each packet is a view of it,
 * valid until the `data` call (and the microtasks it queued) returned, since the next batch
 * overwrites it. No copy and no garbage per packet; a sink that keeps a packet must copy it.
 */
import { addon, type PollHandle } from './addon.ts';
import { errnoName } from './errno.ts';
import { errnoError, type NativeOperation, toNativeError } from './errors.ts';

/** What a poller reports to its owner. */
export interface PollSink {
  data?(buffers: Buffer[]): void;
  accepted?(fds: number[]): void;
  readable?(): void;
  drain?(): void;
  end?(): void;
  error(e: Error): void;
}

/** How the poller reads: whole packets/messages, accepted connections, or only a notification. */
export const PollMode = { read: 0, accept: 1, notify: 2 } as const;

const CB = { data: 0, writable: 1, error: 2, accepted: 3, readable: 4, end: 5, slab: 6 } as const;
const OP = { close: 0, writable: 1, reading: 2, ref: 3 } as const;

/** One watched descriptor. `close()` stops polling and closes the descriptor. */
export class Poller {
  readonly fd: number;
  #handle: PollHandle | null;
  #queue: Buffer[] = [];
  readonly #isSocket: boolean;
  readonly #op: NativeOperation;
  readonly #what: string;

  constructor(
    fd: number,
    mode: number,
    opts: {
      isSocket: boolean;
      maxSize: number;
      batch: number;
      op: NativeOperation;
      what: string;
      reuse?: boolean;
    },
    sink: PollSink,
  ) {
    this.fd = fd;
    this.#isSocket = opts.isSocket;
    this.#op = opts.op;
    this.#what = opts.what;
    // The reused slab: room for a whole batch of the largest packets.
    const slab = opts.reuse === true ? Buffer.allocUnsafeSlow(opts.batch * opts.maxSize) : undefined;
    const lengths = slab === undefined ? undefined : new Int32Array(opts.batch);
    const onEvent = (kind: number, value: unknown): void => {
      if (kind === CB.slab) {
        const n = value as number;
        const views: Buffer[] = new Array(n);
        let off = 0;
        for (let i = 0; i < n; i++) {
          const len = lengths![i]!;
          views[i] = slab!.subarray(off, off + len);
          off += len;
        }
        sink.data?.(views);
      } else if (kind === CB.data) sink.data?.(value as Buffer[]);
      else if (kind === CB.accepted) sink.accepted?.(value as number[]);
      else if (kind === CB.readable) sink.readable?.();
      else if (kind === CB.end) sink.end?.();
      else if (kind === CB.writable) {
        let drained: boolean;
        try {
          drained = this.#flush();
        } catch (e) {
          sink.error(e as Error);
          return;
        }
        if (drained) sink.drain?.();
      } else if (kind === CB.error) {
        const n = value as number;
        sink.error(errnoError(n, errnoName(n), 'read', this.#op, this.#what));
      }
    };
    try {
      this.#handle =
        slab === undefined
          ? addon.pollStart(fd, mode, opts.isSocket, opts.maxSize, opts.batch, onEvent)
          : addon.pollStart(fd, mode, opts.isSocket, opts.maxSize, opts.batch, onEvent, slab, lengths);
    } catch (e) {
      throw toNativeError(e, 'poll', this.#what);
    }
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#handle === null;
  }

  /** Number of buffers waiting for the descriptor to become writable. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Writes buffers as whole packets/messages, in order. Returns false when some had to wait.
   * Those are copied into the queue, so a caller may reuse its buffers once this returns (a TUN
   * device read into one reused slab hands its packets on as views).
   */
  write(buffers: Buffer[]): boolean {
    if (this.#handle === null) throw errnoError(9, 'EBADF', 'write', this.#op, this.#what);
    if (this.#queue.length > 0) {
      for (const b of buffers) this.#queue.push(Buffer.from(b));
      return false;
    }
    const n = this.#writeNow(buffers);
    if (n === buffers.length) return true;
    this.#queue = buffers.slice(n).map((b) => Buffer.from(b));
    addon.pollControl(this.#handle, OP.writable, true);
    return false;
  }

  /** Pauses or resumes reading (back-pressure). */
  setReading(on: boolean): void {
    if (this.#handle) addon.pollControl(this.#handle, OP.reading, on);
  }

  /** Whether this poller keeps the event loop alive (like `socket.ref()`/`unref()`). */
  setRef(on: boolean): void {
    if (this.#handle) addon.pollControl(this.#handle, OP.ref, on);
  }

  /** Stops polling and closes the descriptor; queued writes are dropped. Idempotent. */
  close(): void {
    if (this.#handle === null) return;
    const h = this.#handle;
    this.#handle = null;
    this.#queue = [];
    addon.pollControl(h, OP.close, false);
  }

  #writeNow(buffers: Buffer[]): number {
    try {
      return addon.writeMany(this.fd, buffers, this.#isSocket);
    } catch (e) {
      throw toNativeError(e, this.#op, this.#what);
    }
  }

  /** Writes what the queue holds; true when it emptied. */
  #flush(): boolean {
    if (this.#handle === null || this.#queue.length === 0) return true;
    const n = this.#writeNow(this.#queue);
    this.#queue = this.#queue.slice(n);
    if (this.#queue.length === 0) return true;
    addon.pollControl(this.#handle, OP.writable, true);
    return false;
  }
}
