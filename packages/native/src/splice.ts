/**
 * `FdSplice`: the JS half of splice.c. It joins two connected stream sockets in the kernel:
 * bytes go socket → pipe → socket with splice(2), driven by uv_poll on the event loop, and never
 * reach JS. Half-close is carried across (EOF on one side becomes shutdown(SHUT_WR) on the other);
 * the splice ends once both directions have ended, or at the first error.
 *
 * The descriptors stay the caller's: the addon works on duplicates and closes those itself. The
 * caller must stop reading the originals before starting (e.g. a paused net.Socket whose handle
 * has stopped reading) and close them after the end callback.
 */
import { addon, type SpliceHandle } from './addon.ts';
import { errnoName } from './errno.ts';
import { errnoError, type NativeError, toNativeError } from './errors.ts';

/** How a splice ended. Bytes are counted as read from each side. */
export interface SpliceEnd {
  /** Bytes read from the first descriptor and written to the second. */
  readonly bytes0to1: number;
  /** Bytes read from the second descriptor and written to the first. */
  readonly bytes1to0: number;
  /** The first error, or undefined when both directions ended with EOF. */
  readonly error: NativeError | undefined;
  /** Which descriptor raised `error`: 0, 1, or -1 (neither: e.g. no pipe could be made). */
  readonly side: 0 | 1 | -1;
}

/** Options of {@link FdSplice}. */
export interface SpliceOptions {
  /**
   * Size of each direction's pipe (F_SETPIPE_SZ, best effort; up to /proc/sys/fs/pipe-max-size).
   * Larger pipes move more per system call. Default 256 KiB. Pipes are made on a direction's
   * first byte (idle splices hold none) at the kernel's default size, and grown to this one
   * after the direction moved 1 MiB (short tunnels never pay for the resize).
   */
  readonly pipeSize?: number;
}

const DEFAULT_PIPE = 256 * 1024;

/** A running splice between two socket descriptors. */
export class FdSplice {
  #handle: SpliceHandle | null;

  /** Starts splicing `fd0` ⇄ `fd1`; `onEnd` is called once, unless `stop()` came first. */
  constructor(fd0: number, fd1: number, onEnd: (end: SpliceEnd) => void, options: SpliceOptions = {}) {
    const cb = (kind: number, b01: number, b10: number, errno: number, side: number): void => {
      this.#handle = null;
      const error =
        kind === 0 ? undefined : errnoError(errno, errnoName(errno), 'splice', 'splice', 'splicing a socket');
      onEnd({ bytes0to1: b01, bytes1to0: b10, error, side: side === 0 || side === 1 ? side : -1 });
    };
    try {
      this.#handle = addon.spliceStart(fd0, fd1, options.pipeSize ?? DEFAULT_PIPE, cb);
    } catch (e) {
      throw toNativeError(e, 'splice', 'splicing two sockets');
    }
  }

  /** True until the end callback ran or `stop()` was called. */
  get running(): boolean {
    return this.#handle !== null;
  }

  /** Bytes moved so far: [fd0 → fd1, fd1 → fd0]; [0, 0] once ended. */
  bytes(): [number, number] {
    return this.#handle === null ? [0, 0] : addon.spliceBytes(this.#handle);
  }

  /**
   * Ends the splice now (its duplicates and pipes are closed, bytes still in a pipe are lost);
   * the end callback is not called. Returns the bytes moved, as {@link bytes}.
   */
  stop(): [number, number] {
    if (this.#handle === null) return [0, 0];
    const b = addon.spliceBytes(this.#handle);
    addon.spliceStop(this.#handle);
    this.#handle = null;
    return b;
  }
}
