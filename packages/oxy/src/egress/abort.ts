/**
 * Waiting for egress work that cannot itself be aborted (a route's hooks and DNS, an app's
 * `tcpConnectOverride`, an IP-tunnel connect) while the client may leave: the unit stops
 * waiting at once, and what the work brings later is disposed of.
 */
import { OXY_ERR, OxyError } from '../errors.ts';

/**
 * `work`, or a rejection with `OXY_ERR_ABORTED` as soon as `signal` aborts. Once aborted, a
 * value `work` still resolves with goes to `late` (destroy a socket there), and a rejection is
 * dropped: nobody waits for either.
 */
export function untilAborted<T>(
  work: Promise<T>,
  signal: AbortSignal,
  late?: (value: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(new OxyError(OXY_ERR.ABORTED, 'the client left', { source: 'internal', cause: signal.reason }));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          resolve(value);
        } else late?.(value);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          reject(e);
        }
      },
    );
  });
}
