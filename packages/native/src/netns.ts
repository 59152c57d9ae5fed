/**
 * Network namespaces for the calling thread, which Node cannot enter: run a synchronous
 * function inside another network namespace (or a new one) and come back. Sockets and TUN
 * devices opened inside stay in that namespace after the thread returns.
 *
 * Only the main thread moves; libuv's thread pool stays where it was, so `fn` must do its work
 * synchronously (`tun.open`, `seqpacket.listen`, `server.listen(0)` without a host, which binds
 * before returning). An async `fn` is refused. Needs CAP_SYS_ADMIN over the namespace (root);
 * unprivileged code should start a child under `unshare --user --net --map-root-user` instead
 * and pass descriptors back with `passFd`.
 */
import { closeSync, openSync } from 'node:fs';
import { addon } from './addon.ts';
import { NativeError, toNativeError } from './errors.ts';

function enter(fd: number, what: string): void {
  try {
    addon.setNetns(fd);
  } catch (e) {
    throw toNativeError(e, 'netns', what);
  }
}

function inside<T>(go: () => void, what: string, fn: () => T): T {
  const back = openSync('/proc/thread-self/ns/net', 'r');
  try {
    go();
    let result: T;
    try {
      result = fn();
    } finally {
      try {
        addon.setNetns(back);
      } catch (e) {
        // Staying in the wrong namespace would send later traffic to the wrong place.
        process.emitWarning(`could not return to the original network namespace: ${(e as Error).message}`);
        process.abort();
      }
    }
    if (result instanceof Promise) {
      throw new NativeError(
        'NATIVE_ERR_ASYNC',
        `${what}: the function must be synchronous (it returned a Promise)`,
      );
    }
    return result;
  } finally {
    closeSync(back);
  }
}

/** Runs `fn` with the main thread in the network namespace at `nsPath` (e.g. /run/netns/x). */
export function run<T>(nsPath: string, fn: () => T): T {
  const what = `entering network namespace ${nsPath}`;
  let target: number;
  try {
    target = openSync(nsPath, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw toNativeError(Object.assign(err, { errno: -(err.errno ?? 0) }), 'netns', what);
  }
  try {
    return inside(() => enter(target, what), what, fn);
  } finally {
    closeSync(target);
  }
}

/**
 * Runs `fn` with the main thread in a new, empty network namespace (only `lo`, down). Returns
 * `fn`'s result; the namespace lives as long as something opened in it (a socket, a TUN fd).
 */
export function runInNew<T>(fn: () => T): T {
  const what = 'creating a network namespace';
  return inside(
    () => {
      try {
        addon.unshareNetns();
      } catch (e) {
        throw toNativeError(e, 'netns', what);
      }
    },
    what,
    fn,
  );
}
