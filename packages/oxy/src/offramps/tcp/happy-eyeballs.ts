/**
 * TCP connect across several addresses with Happy Eyeballs (RFC 8305 §5): attempts are
 * staggered, not sequential. The first attempt starts at once; each further one starts when the
 * previous fails or `attemptDelayMs` after it started, whichever is first; the first to connect
 * wins and every other attempt is destroyed. Node's own `autoSelectFamily` only moves on after a
 * per-attempt timeout and never races two attempts, which loses to a blackholed first address.
 *
 * Addresses are tried in the order given: the resolver already interleaves the families
 * (`src/dns/resolver.ts`). Checking them against `egress.blocked_cidrs` is the caller's job,
 * done before this is called. Errors are `OxyError`s whose messages are short enough for a 502
 * body and name no more than one address.
 */

import net from 'node:net';
import { OXY_ERR, OxyError, type OxyErrorCode } from '../../errors.ts';

/** The RFC 8305 §5 recommended Connection Attempt Delay. */
export const DEFAULT_ATTEMPT_DELAY_MS = 250;

/** Options of {@link connectHappyEyeballs}. */
export interface HappyEyeballsOptions {
  /** Overall deadline for the whole race, in ms. When it passes: `OXY_ERR_CONNECT_TIMEOUT`. */
  readonly timeoutMs: number;
  /** Delay before starting the next attempt while one is pending (default 250 ms, RFC 8305 §5). */
  readonly attemptDelayMs?: number;
  /** Source address to bind. Addresses of the other family are skipped. */
  readonly localAddress?: string;
  /** Aborts every attempt; the promise rejects with `OXY_ERR_ABORTED`. */
  readonly signal?: AbortSignal;
  /**
   * Starts one attempt; the returned socket must emit `connect` or `error`. Default:
   * `net.connect` with `noDelay`, the source address, and `autoSelectFamily` off.
   * `tcpConnectOverride` plugs in here.
   */
  readonly connect?: (address: string, port: number, localAddress: string | undefined) => net.Socket;
}

/** `[v6]:port` or `v4:port`. */
export function formatHostPort(address: string, port: number): string {
  return net.isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

function defaultConnect(address: string, port: number, localAddress: string | undefined): net.Socket {
  return net.connect({ host: address, port, localAddress, noDelay: true, autoSelectFamily: false });
}

/**
 * Connects to the first of `addresses` (IP literals) that accepts on `port`, racing them per
 * RFC 8305. Resolves with the connected socket, `noDelay` set and no listeners of ours left on
 * it; `socket.remoteAddress` is the address that won. Rejects with an `OxyError`:
 * `OXY_ERR_CONNECT_TIMEOUT` (retryable) when `timeoutMs` passes, `OXY_ERR_CONNECT_REFUSED` when
 * every address refused, `OXY_ERR_UNREACHABLE` when a route was missing, `OXY_ERR_CONNECT_FAILED`
 * otherwise (no usable address, a bad source address), `OXY_ERR_ABORTED` on the signal.
 */
export function connectHappyEyeballs(
  addresses: readonly string[],
  port: number,
  opts: HappyEyeballsOptions,
): Promise<net.Socket> {
  const connect = opts.connect ?? defaultConnect;
  const delay = Math.max(0, opts.attemptDelayMs ?? DEFAULT_ATTEMPT_DELAY_MS);
  const sourceFamily = opts.localAddress === undefined ? 0 : net.isIP(opts.localAddress);
  const candidates = sourceFamily === 0 ? addresses : addresses.filter((a) => net.isIP(a) === sourceFamily);

  if (candidates.length === 1) {
    return connectOne(candidates[0] as string, port, opts.timeoutMs, connect, opts.localAddress, opts.signal);
  }
  return new Promise<net.Socket>((resolve, reject) => {
    if (candidates.length === 0) {
      const why =
        addresses.length === 0
          ? 'no address to connect to'
          : `no address of the source address's family (IPv${sourceFamily})`;
      reject(upstreamError(OXY_ERR.CONNECT_FAILED, why));
      return;
    }
    if (opts.signal?.aborted) {
      reject(aborted(opts.signal));
      return;
    }

    const pending = new Set<net.Socket>();
    const failures: { address: string; error: NodeJS.ErrnoException }[] = [];
    let next = 0;
    let done = false;
    let staggerTimer: NodeJS.Timeout | undefined;

    const finish = (): void => {
      done = true;
      clearTimeout(staggerTimer);
      clearTimeout(deadline);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (error: OxyError): void => {
      finish();
      for (const s of pending) s.destroy();
      pending.clear();
      reject(error);
    };
    const onAbort = (): void => {
      if (!done && opts.signal !== undefined) fail(aborted(opts.signal));
    };

    const startNext = (): void => {
      clearTimeout(staggerTimer);
      if (done || next >= candidates.length) return;
      const address = candidates[next++] as string;
      let socket: net.Socket;
      try {
        socket = connect(address, port, opts.localAddress);
      } catch (error) {
        // Boundary: a synchronous throw from connect (bad source address) is one failed attempt.
        onAttemptError(address, undefined, error as NodeJS.ErrnoException);
        return;
      }
      pending.add(socket);
      const onError = (error: NodeJS.ErrnoException): void => onAttemptError(address, socket, error);
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        if (done) {
          socket.destroy();
          return;
        }
        pending.delete(socket);
        finish();
        for (const s of pending) s.destroy();
        pending.clear();
        socket.setNoDelay(true);
        resolve(socket);
      });
      if (next < candidates.length) staggerTimer = setTimeout(startNext, delay);
    };

    const onAttemptError = (
      address: string,
      socket: net.Socket | undefined,
      error: NodeJS.ErrnoException,
    ): void => {
      if (socket !== undefined) {
        pending.delete(socket);
        socket.destroy();
      }
      if (done) return;
      failures.push({ address, error });
      if (next < candidates.length) startNext();
      else if (pending.size === 0) fail(summarise(failures, port));
    };

    const deadline = setTimeout(() => {
      const first = candidates[0] as string;
      const others = candidates.length > 1 ? ` (and ${candidates.length - 1} more)` : '';
      fail(
        upstreamError(
          OXY_ERR.CONNECT_TIMEOUT,
          `connect to ${formatHostPort(first, port)}${others} timed out after ${opts.timeoutMs} ms`,
          { retryable: true, cause: failures[0]?.error },
        ),
      );
    }, opts.timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    startNext();
  });
}

/**
 * The race with one address (a literal IP, or a name with one address): a plain connect under
 * the deadline and the signal, with the race's errors, and none of its per-attempt bookkeeping.
 */
function connectOne(
  address: string,
  port: number,
  timeoutMs: number,
  connect: NonNullable<HappyEyeballsOptions['connect']>,
  localAddress: string | undefined,
  signal: AbortSignal | undefined,
): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    if (signal?.aborted) {
      reject(aborted(signal));
      return;
    }
    let socket: net.Socket;
    try {
      socket = connect(address, port, localAddress);
    } catch (error) {
      // Boundary: a synchronous throw from connect (bad source address) is the one failed attempt.
      reject(summarise([{ address, error: error as NodeJS.ErrnoException }], port));
      return;
    }
    // `on` and `off` rather than `once`: `once` wraps each listener in another closure.
    const settle = (): void => {
      clearTimeout(deadline);
      socket.off('error', onError);
      socket.off('connect', onConnect);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (error: OxyError): void => {
      settle();
      socket.destroy();
      reject(error);
    };
    const onError = (error: NodeJS.ErrnoException): void => fail(summarise([{ address, error }], port));
    const onAbort = (): void => fail(aborted(signal as AbortSignal));
    const onConnect = (): void => {
      settle();
      socket.setNoDelay(true);
      resolve(socket);
    };
    const deadline = setTimeout(
      () =>
        fail(
          upstreamError(
            OXY_ERR.CONNECT_TIMEOUT,
            `connect to ${formatHostPort(address, port)} timed out after ${timeoutMs} ms`,
            { retryable: true },
          ),
        ),
      timeoutMs,
    );
    socket.on('error', onError);
    socket.on('connect', onConnect);
    signal?.addEventListener('abort', onAbort);
  });
}

/**
 * The error of a connect to `address` that failed with `errnoCode` (e.g. `ECONNREFUSED`), made
 * elsewhere (the addon's reactor thread): the same codes and messages as a failed race.
 */
export function connectFailure(
  address: string,
  port: number,
  errnoCode: string,
  timeoutMs: number,
): OxyError {
  if (errnoCode === 'ETIMEDOUT') {
    return upstreamError(
      OXY_ERR.CONNECT_TIMEOUT,
      `connect to ${formatHostPort(address, port)} timed out after ${timeoutMs} ms`,
      { retryable: true },
    );
  }
  const error = Object.assign(new Error(`connect ${errnoCode} ${formatHostPort(address, port)}`), {
    code: errnoCode,
  }) as NodeJS.ErrnoException;
  return summarise([{ address, error }], port);
}

const UNREACHABLE_ERRNOS = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

/** One error for a race in which every attempt failed: the most telling kind wins. */
function summarise(failures: { address: string; error: NodeJS.ErrnoException }[], port: number): OxyError {
  const pick = (codes: (code: string | undefined) => boolean) => failures.find((f) => codes(f.error.code));
  const unreachable = pick((c) => c !== undefined && UNREACHABLE_ERRNOS.has(c));
  const refused = pick((c) => c === 'ECONNREFUSED');
  const timedOut = pick((c) => c === 'ETIMEDOUT');
  const [code, failure, what] = ((): [OxyErrorCode, (typeof failures)[number], string] => {
    if (refused !== undefined && failures.every((f) => f.error.code === 'ECONNREFUSED')) {
      return [OXY_ERR.CONNECT_REFUSED, refused, 'connection refused by'];
    }
    if (unreachable !== undefined) return [OXY_ERR.UNREACHABLE, unreachable, 'no route to'];
    if (refused !== undefined) return [OXY_ERR.CONNECT_REFUSED, refused, 'connection refused by'];
    if (timedOut !== undefined) return [OXY_ERR.CONNECT_TIMEOUT, timedOut, 'connect timed out to'];
    const first = failures[0] as (typeof failures)[number];
    return [OXY_ERR.CONNECT_FAILED, first, `connect failed (${first.error.code ?? first.error.message}) to`];
  })();
  const others = failures.length > 1 ? ` (and ${failures.length - 1} more)` : '';
  return upstreamError(code, `${what} ${formatHostPort(failure.address, port)}${others}`, {
    retryable: code === OXY_ERR.CONNECT_TIMEOUT,
    cause: failure.error,
  });
}

function upstreamError(
  code: OxyErrorCode,
  message: string,
  options: { retryable?: boolean; cause?: unknown } = {},
): OxyError {
  return new OxyError(code, message, { source: 'upstream', ...options });
}

function aborted(signal: AbortSignal): OxyError {
  return new OxyError(OXY_ERR.ABORTED, 'connect aborted', { source: 'internal', cause: signal.reason });
}
