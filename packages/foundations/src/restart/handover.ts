/**
 * The new process's end of the restart handover: a socketpair inherited from the old
 * process. The old process first writes the app's state (`{type:'state'}`); the new one
 * answers once, with `{type:'ready'}` after its endpoints accept or `{type:'failed'}`.
 *
 * Everything here is synchronous on purpose. The state is read at start-up, before the
 * app's `start()` runs, so it can be handed over as a plain value; the report is written
 * with `fs.writeSync`, so a failure reported just before `process.exit()` is not lost in
 * a stream buffer.
 */
import fs from 'node:fs';
import { FND_ERR, FoundationsError } from '../errors.ts';
import { decodeBody, encodeFrame, type HandoverMessage, MAX_STATE_FRAME } from './frames.ts';

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Reads exactly `n` bytes, waiting out EAGAIN, within `deadline` (ms since epoch). */
function readExactSync(fd: number, n: number, deadline: number): Buffer {
  const out = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    let got: number;
    try {
      got = fs.readSync(fd, out, off, n - off, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      if (Date.now() > deadline) {
        throw new FoundationsError(FND_ERR.RESTART, 'restart handover: timed out waiting for the state');
      }
      Atomics.wait(sleeper, 0, 0, 2);
      continue;
    }
    if (got === 0) {
      throw new FoundationsError(FND_ERR.RESTART, 'restart handover: the old process closed the channel');
    }
    off += got;
  }
  return out;
}

/** The control channel to the old process, owned by the new one. */
export class HandoverChannel {
  readonly #fd: number;
  #open = true;

  /** True: a process handed its state by a graceful restart was started by one (a worker's channel says). */
  get restarted(): boolean {
    return true;
  }

  /** Wraps the inherited descriptor named by `FOUNDATIONS_HANDOVER.control`. */
  constructor(fd: number) {
    this.#fd = fd;
  }

  /** Reads the state message the old process sends first; blocks up to `timeoutMs`. */
  readState(timeoutMs = 30_000): unknown {
    const deadline = Date.now() + timeoutMs;
    const length = readExactSync(this.#fd, 4, deadline).readUInt32BE(0);
    if (length > MAX_STATE_FRAME) {
      throw new FoundationsError(
        FND_ERR.RESTART,
        `restart handover: state of ${length} bytes exceeds the limit`,
      );
    }
    const message = decodeBody(readExactSync(this.#fd, length, deadline));
    if (message.type !== 'state') {
      throw new FoundationsError(
        FND_ERR.RESTART,
        `restart handover: expected the state, got "${message.type}"`,
      );
    }
    return message.state;
  }

  /** Tells the old process we accept connections; closes the channel. */
  reportReady(): void {
    this.#send({ type: 'ready', pid: process.pid });
  }

  /** Tells the old process start-up failed, with the reason shown to the restarter. */
  reportFailed(reason: string): void {
    this.#send({ type: 'failed', reason });
  }

  /** True until a report was sent. */
  get open(): boolean {
    return this.#open;
  }

  #send(message: HandoverMessage): void {
    if (!this.#open) return;
    this.#open = false;
    const frame = encodeFrame(message);
    try {
      let off = 0;
      const deadline = Date.now() + 5000;
      while (off < frame.length) {
        try {
          off += fs.writeSync(this.#fd, frame, off);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > deadline) throw e;
          Atomics.wait(sleeper, 0, 0, 2);
        }
      }
    } finally {
      fs.closeSync(this.#fd);
    }
  }
}
