/**
 * Egress through another HTTP proxy (proxy chaining): a CONNECT tunnel for streams, and the
 * pieces the HTTP off-ramp needs to send absolute-form requests to the same proxy.
 *
 * The proxy's answer to CONNECT is read strictly: a bounded head (16 KiB by default), an
 * `HTTP/1.x NNN` status line, `name: value` header lines and nothing else; interim 1xx heads
 * before the final one are skipped (RFC 9110 §15.2), within the same limit. A 2xx opens the
 * tunnel; any other status fails with `OXY_ERR_UPSTREAM_PROXY` carrying it in `status` (407
 * when credentials are missing or wrong). Bytes the proxy sent after the head already belong to
 * the tunnel and are handed back as `head`, never dropped. Only cleartext proxies are spoken to.
 */

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { OXY_ERR, OxyError, type OxyErrorCode } from '../../errors.ts';
import { formatHostPort } from '../tcp/happy-eyeballs.ts';

/** Credentials for the upstream proxy: HTTP Basic, or a whole `Proxy-Authorization` value. */
export type UpstreamProxyAuth =
  | { readonly username: string; readonly password: string }
  | { readonly header: string };

/** An upstream HTTP proxy to chain through. */
export interface UpstreamProxy {
  /** IP address or host name of the proxy. */
  readonly host: string;
  readonly port: number;
  /** Sent as `Proxy-Authorization`; from settings, or from the `handleConnection` hook's decision. */
  readonly auth?: UpstreamProxyAuth;
  /** TLS to the proxy is not supported; the field is here so the type says so. */
  readonly tls?: false;
}

/** Options of {@link connectViaProxy}. */
export interface ConnectViaProxyOptions {
  /** Deadline for connecting to the proxy and reading its answer. Then `OXY_ERR_CONNECT_TIMEOUT`. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Largest response head accepted (default 16 KiB). */
  readonly maxHeadBytes?: number;
  /**
   * A connection to the proxy that the caller already opened, connecting or connected (Oxy's
   * egress opens it as forwarded requests reach the proxy: `egress.dns`, `source_addr`, Happy
   * Eyeballs or `tcpConnectOverride`). When absent, `net.connect` opens one (Node resolves a
   * host name itself). Destroyed on every failure.
   */
  readonly socket?: Duplex;
}

/** A tunnel through the upstream proxy. */
export interface ProxyTunnel {
  /** Connected, paused, with no listeners of ours; the tunnel's bytes flow on it. */
  readonly socket: Duplex;
  /** Tunnel bytes that arrived with the proxy's answer; write them downstream first. */
  readonly head: Buffer;
  /** The proxy's status (2xx). */
  readonly status: number;
}

const DEFAULT_MAX_HEAD = 16 * 1024;
const HEADER_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*[^\r\n]*$/;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: ([^\r\n]*))?$/;

/** The `Proxy-Authorization` value for `auth`, or undefined. Throws on a value with CR or LF. */
export function proxyAuthorization(auth: UpstreamProxyAuth | undefined): string | undefined {
  if (auth === undefined) return undefined;
  const value =
    'header' in auth
      ? auth.header
      : `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  if (/[\r\n\0]/.test(value)) {
    throw new OxyError(OXY_ERR.INVALID_APP, 'upstream proxy credentials contain a line break', {
      source: 'internal',
    });
  }
  return value;
}

/**
 * Opens a CONNECT tunnel to `target` through `proxy`. Rejects with an `OxyError`:
 * `OXY_ERR_UPSTREAM_PROXY` when the proxy cannot be reached, answers a non-2xx status (in
 * `status`) or a malformed head; `OXY_ERR_CONNECT_TIMEOUT` (retryable) at the deadline;
 * `OXY_ERR_ABORTED` on the signal.
 */
export function connectViaProxy(
  proxy: UpstreamProxy,
  target: { readonly host: string; readonly port: number },
  opts: ConnectViaProxyOptions,
): Promise<ProxyTunnel> {
  const proxyName = formatHostPort(proxy.host, proxy.port);
  return new Promise<ProxyTunnel>((resolve, reject) => {
    // A connection handed in is ours to close on every failure, these early ones too.
    const refuse = (e: unknown): void => {
      opts.socket?.destroy();
      reject(e);
    };
    if (/[\s/@]/.test(target.host) || target.host === '' || !Number.isInteger(target.port)) {
      refuse(proxyError(`invalid CONNECT target ${JSON.stringify(target.host)}`));
      return;
    }
    let authorization: string | undefined;
    try {
      authorization = proxyAuthorization(proxy.auth);
    } catch (e) {
      refuse(e);
      return;
    }
    if (opts.signal?.aborted) {
      refuse(abortError(opts.signal));
      return;
    }
    const authority = formatHostPort(target.host, target.port);
    const maxHead = opts.maxHeadBytes ?? DEFAULT_MAX_HEAD;
    const socket: Duplex & { connecting?: boolean } =
      opts.socket ?? net.connect({ host: proxy.host, port: proxy.port, noDelay: true });
    let received: Buffer = Buffer.alloc(0);
    /** Bytes of interim (1xx) heads already read and skipped. */
    let headBytes = 0;
    let done = false;

    const cleanup = (): void => {
      done = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.off('connect', onConnect);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    const fail = (error: OxyError): void => {
      if (done) return;
      cleanup();
      socket.destroy();
      reject(error);
    };
    const onAbort = (): void => fail(abortError(opts.signal as AbortSignal));
    const onConnect = (): void => {
      const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
      if (authorization !== undefined) lines.push(`Proxy-Authorization: ${authorization}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    };
    const onError = (e: NodeJS.ErrnoException): void =>
      fail(proxyError(`upstream proxy ${proxyName} failed (${e.code ?? e.message})`, { cause: e }));
    const onEnd = (): void =>
      fail(proxyError(`upstream proxy ${proxyName} closed the connection before answering`));
    const onData = (chunk: Buffer): void => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        // The interim heads count against the limit too: a proxy cannot send 1xx for ever.
        if (end < 0 ? headBytes + received.length > maxHead : headBytes + end + 4 > maxHead) {
          fail(proxyError(`upstream proxy answer head is larger than ${maxHead} bytes`));
          return;
        }
        if (end < 0) return;
        const parsed = parseResponseHead(received.subarray(0, end).toString('latin1'));
        if ('error' in parsed) {
          fail(proxyError(`malformed answer from upstream proxy ${proxyName}: ${parsed.error}`));
          return;
        }
        // RFC 9110 §15.2: interim answers (`100 Continue`, `103 Early Hints`) come before the
        // final one and are skipped. A 101 is final: this CONNECT asked for no protocol switch.
        if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
          headBytes += end + 4;
          received = received.subarray(end + 4);
          continue;
        }
        if (parsed.status < 200 || parsed.status > 299) {
          fail(proxyRefused(parsed.status, parsed.reason));
          return;
        }
        socket.pause();
        cleanup();
        resolve({ socket, head: Buffer.from(received.subarray(end + 4)), status: parsed.status });
        return;
      }
    };
    const timer = setTimeout(
      () =>
        fail(
          proxyError(`upstream proxy ${proxyName} did not open a tunnel within ${opts.timeoutMs} ms`, {
            code: OXY_ERR.CONNECT_TIMEOUT,
            retryable: true,
          }),
        ),
      opts.timeoutMs,
    );
    if (opts.socket !== undefined && (opts.socket.destroyed || !opts.socket.writable)) {
      fail(proxyError(`the connection to upstream proxy ${proxyName} is already closed`));
      return;
    }
    // A socket handed in may be connected already; then the CONNECT goes out at once.
    if (socket.connecting === true || opts.socket === undefined) socket.on('connect', onConnect);
    else queueMicrotask(onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Parses a response head (without its final CRLF CRLF): the status line, then header lines.
 * Returns the status and reason, or `{ error }` saying what is wrong.
 */
export function parseResponseHead(
  text: string,
): { status: number; reason: string; headers: [string, string][] } | { error: string } {
  const lines = text.split('\r\n');
  const match = STATUS_LINE.exec(lines[0] ?? '');
  if (match === null) return { error: `bad status line ${JSON.stringify((lines[0] ?? '').slice(0, 40))}` };
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    if (!HEADER_LINE.test(line)) return { error: `bad header line ${JSON.stringify(line.slice(0, 40))}` };
    const colon = line.indexOf(':');
    headers.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
  }
  return { status: Number(match[1]), reason: match[2] ?? '', headers };
}

/**
 * The error for a final non-2xx answer of the upstream proxy (a refusal, or 407 for missing or
 * wrong credentials): `OXY_ERR_UPSTREAM_PROXY` with the status, answered 502. Shared by CONNECT
 * tunnels and forwarded requests, so a client sees one answer for one cause.
 */
export function proxyRefused(status: number, reason: string): OxyError {
  const text = reason === '' ? '' : ` ${reason.slice(0, 80)}`;
  return proxyError(`upstream proxy answered ${status}${text}`, { status });
}

function proxyError(
  message: string,
  options: { code?: OxyErrorCode; retryable?: boolean; status?: number; cause?: unknown } = {},
): OxyError {
  const { code = OXY_ERR.UPSTREAM_PROXY, ...rest } = options;
  return new OxyError(code, message, { source: 'upstream', ...rest });
}

function abortError(signal: AbortSignal): OxyError {
  return new OxyError(OXY_ERR.ABORTED, 'upstream proxy connect aborted', {
    source: 'internal',
    cause: signal.reason,
  });
}
