/**
 * Opening a tunnel must settle on every path (STYLE: no promise that settles only on the
 * events someone remembered). `settleOpen` wraps an open step with the client's timeout and
 * the caller's AbortSignal: whichever comes first wins, and a lost race runs the step's cancel.
 */

import { OXY_ERR, OxyError } from '../errors.ts';

/**
 * Runs `body`, which reports through `resolve`/`reject` and returns how to cancel it, under
 * `timeoutMs` (`OXY_ERR_CONNECT_TIMEOUT`) and `signal` (`OXY_ERR_ABORTED`). Settles once.
 */
export function settleOpen<T>(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  body: (resolve: (v: T) => void, reject: (e: OxyError) => void) => () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let cancel: (() => void) | undefined;
    const onAbort = () =>
      stop(new OxyError(OXY_ERR.ABORTED, 'MASQUE tunnel open aborted', { cause: signal?.reason }));
    const timer = setTimeout(
      () =>
        stop(
          new OxyError(OXY_ERR.CONNECT_TIMEOUT, `MASQUE tunnel not open after ${timeoutMs} ms`, {
            retryable: true,
          }),
        ),
      timeoutMs,
    );
    const finish = (): boolean => {
      if (done) return false;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    function stop(e: OxyError): void {
      if (!finish()) return;
      cancel?.();
      reject(e);
    }
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    cancel = body(
      (v) => {
        if (finish()) resolve(v);
      },
      (e) => {
        if (finish()) reject(e);
      },
    );
  });
}
