/**
 * One body through a {@link BodyStage}, in order, with backpressure: the stage may answer a
 * chunk later (a promise), and the chunks after it wait. The exchange engine uses it for both
 * directions; without a stage there is no pipe (the bytes go straight on).
 *
 * Ordering rules: the stage's `write` calls, then `end`, are made one at a time in arrival
 * order; what each returns goes to `emit` in the same order; a failure (thrown or rejected) is
 * reported once to `fail` and nothing more is called. `abort` tells the stage the exchange ended
 * first.
 */
import type { BodyStage } from './body-stage.ts';

/** Where a pipe sends what the stage lets through. */
export interface StageOutlet {
  /** Bytes to send on; false when the receiver is full (it then calls `resume` once it drained). */
  emit(chunk: Buffer, resume: () => void): boolean;
  /** The stage ended the body; `last` are its final bytes. */
  end(last: Buffer | null): void;
  /** The stage stopped the body (a `BodyStopped`, or any other error). */
  fail(e: unknown): void;
}

/** A body through a stage: `write` each chunk, then `end`. */
export class StagePipe {
  readonly #stage: BodyStage;
  readonly #out: StageOutlet;
  /** Chunks (null: the end) that arrived while the stage was busy with an earlier one. */
  readonly #queue: (Buffer | null)[] = [];
  #busy = false;
  #done = false;
  #resume: (() => void) | null = null;

  constructor(stage: BodyStage, out: StageOutlet) {
    this.#stage = stage;
    this.#out = out;
  }

  /**
   * One chunk in. False when the source should pause: `resume` is called once the stage and
   * the receiver can take more.
   */
  write(chunk: Buffer, resume: () => void): boolean {
    if (this.#done) return true;
    if (this.#busy) {
      this.#queue.push(chunk);
      this.#resume = resume;
      return false;
    }
    this.#resume = resume;
    return this.#run(chunk);
  }

  /** The body ended. */
  end(): void {
    if (this.#done) return;
    if (this.#busy) this.#queue.push(null);
    else this.#run(null);
  }

  /** The exchange ended first: the stage is told, nothing more is called. */
  abort(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#queue.length = 0;
    this.#stage.abort(reason);
  }

  /** Runs one step; true when the pipe can take the next chunk at once. */
  #run(chunk: Buffer | null): boolean {
    let r: Buffer | null | Promise<Buffer | null>;
    try {
      r = chunk === null ? this.#stage.end() : this.#stage.write(chunk);
    } catch (e) {
      this.#stop(e);
      return true;
    }
    if (!(r instanceof Promise)) return this.#deliver(r, chunk === null);
    this.#busy = true;
    r.then(
      (b) => {
        this.#busy = false;
        if (this.#done) return;
        if (this.#deliver(b, chunk === null)) this.#next();
      },
      (e: unknown) => {
        this.#busy = false;
        this.#stop(e);
      },
    );
    return false;
  }

  /** Sends what the stage gave; false when the receiver is full (it calls `#next` back). */
  #deliver(b: Buffer | null, last: boolean): boolean {
    if (last) {
      this.#done = true;
      this.#out.end(b !== null && b.length > 0 ? b : null);
      return true;
    }
    if (b === null || b.length === 0) return true;
    return this.#out.emit(b, this.#next);
  }

  /** Runs what queued up, then lets the source go on. */
  readonly #next = (): void => {
    while (this.#queue.length > 0) {
      if (this.#busy || this.#done) return;
      if (!this.#run(this.#queue.shift() as Buffer | null)) return;
    }
    if (this.#busy || this.#done) return;
    const resume = this.#resume;
    this.#resume = null;
    resume?.();
  };

  #stop(e: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#queue.length = 0;
    this.#out.fail(e);
  }
}
