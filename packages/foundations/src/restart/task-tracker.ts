/**
 * A task tracker: Go's `sync.WaitGroup` in spirit, shaped like tokio-util's `TaskTracker`.
 *
 * Draining needs one question answered: "has all the work that was running when we stopped
 * accepting finished?". Every unit of work (a connection, a request, a background flush)
 * registers itself and says when it is done; `close()` marks the point after which no new
 * work may start, and `wait()` resolves once the tracker is closed *and* empty. Requiring
 * the close first avoids the classic race where the count touches zero between two tasks
 * and a waiter leaves too early.
 *
 * Ordering rule: call `close()` before `wait()` can settle; `start()`/`track()` after
 * `close()` throw, so late work fails loudly instead of being cut off silently.
 */
import { FND_ERR, FoundationsError } from '../errors.ts';

/** One running task. `done()` is idempotent; `using` a token calls it on scope exit. */
export interface TaskToken {
  /** Marks the task finished. Calling it again does nothing. */
  done(): void;
  /** Same as `done()`, so `using task = tracker.start()` works. */
  [Symbol.dispose](): void;
}

/** How `wait()` ended: every task finished, or the timeout passed first. */
export type WaitOutcome = 'done' | 'timeout';

/** Counts running tasks and lets one party wait until all of them have finished. */
export class TaskTracker {
  #size = 0;
  #closed = false;
  #waiters: Array<() => void> = [];

  /** Number of tasks started and not yet done. */
  get size(): number {
    return this.#size;
  }

  /** True once `close()` was called: no new tasks are accepted. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Registers a task and returns its token; call `token.done()` when it finishes.
   * Throws `FND_ERR_RESTART` after `close()`.
   */
  start(): TaskToken {
    if (this.#closed) {
      throw new FoundationsError(FND_ERR.RESTART, 'task tracker is closed: the service is draining');
    }
    this.#size++;
    let finished = false;
    const done = (): void => {
      if (finished) return;
      finished = true;
      this.#size--;
      this.#settle();
    };
    return { done, [Symbol.dispose]: done };
  }

  /**
   * Tracks a promise, or an async function started now, until it settles; returns it
   * unchanged so callers can still await the result. Throws `FND_ERR_RESTART` after `close()`.
   */
  track<T>(task: Promise<T> | (() => Promise<T>)): Promise<T> {
    const token = this.start();
    let promise: Promise<T>;
    try {
      promise = typeof task === 'function' ? task() : task;
    } catch (e) {
      token.done();
      return Promise.reject(e);
    }
    return promise.finally(() => token.done());
  }

  /** Refuses new tasks from now on, so `wait()` can resolve once the running ones end. */
  close(): void {
    this.#closed = true;
    this.#settle();
  }

  /**
   * Resolves with `'done'` once the tracker is closed and no task is running, or with
   * `'timeout'` after `timeoutMs` (if given) when tasks remain.
   */
  wait(timeoutMs?: number): Promise<WaitOutcome> {
    if (this.#closed && this.#size === 0) return Promise.resolve('done');
    return new Promise<WaitOutcome>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        resolve('done');
      };
      this.#waiters.push(waiter);
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => {
            this.#waiters = this.#waiters.filter((w) => w !== waiter);
            resolve('timeout');
          },
          Math.max(0, timeoutMs),
        );
      }
    });
  }

  #settle(): void {
    if (!this.#closed || this.#size !== 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}
