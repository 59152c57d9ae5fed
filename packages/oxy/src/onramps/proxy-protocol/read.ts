/**
 * Reads the PROXY header (v1 or v2) that must open a connection, before anything else touches
 * the socket.
 *
 * Ordering rules: the peer is checked against `trusted_cidrs` first, and an untrusted peer is
 * closed at once without a byte read; then the header timer starts; then bytes are read until
 * a whole header has arrived (any number of reads). On success the socket is left paused with
 * nothing lost: the bytes after the header are handed back (`rest`, or put back into the socket
 * with `unshift`). On any failure the socket is destroyed, the reason counted, and the promise
 * rejects with a `ProxyProtocolError`; the promise settles exactly once on every path (header,
 * malformed bytes, timeout, end of stream, socket error, close).
 */
import type { Socket } from 'node:net';
import {
  type ProxyHeader,
  ProxyHeaderDecoder,
  ProxyProtocolError,
  type ProxyReason,
} from '../../protocols/proxy-protocol/index.ts';
import { countHeader, countRejected } from './metrics.ts';
import type { ProxyProtocolSettings } from './settings.ts';
import { TrustedPeers } from './trust.ts';

/** Options of {@link readProxyHeader}. Build them once per endpoint with {@link proxyReadOptions}. */
export interface ReadProxyHeaderOptions {
  readonly trusted: TrustedPeers;
  /** Milliseconds allowed for the whole header after the call. */
  readonly headerTimeout: number;
  /** Largest v2 header accepted. Default 4096. */
  readonly maxV2Length?: number;
  /**
   * Put the bytes after the header back into the socket (`socket.unshift`) and answer
   * `rest: null`, for consumers that read the socket themselves (an HTTP server). Default false.
   */
  readonly unshift?: boolean;
  /** The endpoint's name, for the metrics' `endpoint` label. Default empty. */
  readonly endpoint?: string;
}

/** What {@link readProxyHeader} resolves to. */
export interface ProxyHeaderRead {
  readonly header: ProxyHeader;
  /** The bytes that followed the header in the last read, or `null` when none (or unshifted). */
  readonly rest: Buffer | null;
}

/** The read options of an endpoint's settings (the CIDRs parsed once). */
export function proxyReadOptions(
  settings: ProxyProtocolSettings,
  extra: { readonly maxV2Length?: number; readonly unshift?: boolean; readonly endpoint?: string } = {},
): ReadProxyHeaderOptions {
  return {
    trusted: new TrustedPeers(settings.trusted_cidrs as readonly string[]),
    headerTimeout: settings.header_timeout,
    ...extra,
  };
}

/**
 * True for a Unix-domain socket (Node's Pipe handle). Not told by a missing `remoteAddress`: a
 * TCP connection reset before it was accepted has none either (the kernel no longer reports a
 * reset socket's peer) and its bytes are still readable, so taking it for a Unix peer would trust
 * any sender that resets at once. A socket whose handle is gone is not one: it is refused.
 */
function onUnixSocket(socket: Socket): boolean {
  const handle = (socket as { _handle?: object | null })._handle;
  return handle?.constructor.name === 'Pipe';
}

/**
 * Reads the header at the start of `socket`. A peer on a UNIX socket is trusted: the socket
 * file's permissions decide who reaches it. A TCP peer is trusted only in `options.trusted`
 * (one with no address, reset before the accept, never is). Rejects with a
 * {@link ProxyProtocolError} whose `reason` is `untrusted`, `timeout`, `truncated` (the peer
 * closed, reset or errored before the header ended) or the codec's reason; the socket is then
 * destroyed. On success this function's listeners are gone: the caller's own `error` listener
 * must be on the socket (as every on-ramp puts one at accept).
 */
export function readProxyHeader(socket: Socket, options: ReadProxyHeaderOptions): Promise<ProxyHeaderRead> {
  return new Promise((resolve, reject) => {
    const fail = (error: ProxyProtocolError) => {
      countRejected(error.reason, options.endpoint);
      socket.destroy();
      reject(error);
    };
    const peer = socket.remoteAddress;
    if (socket.destroyed)
      return fail(new ProxyProtocolError('truncated', 'the socket closed before the header'));
    if (!onUnixSocket(socket) && !options.trusted.has(peer)) {
      return fail(new ProxyProtocolError('untrusted', `peer ${peer ?? '?'} is not in trusted_cidrs`));
    }
    const decoder = new ProxyHeaderDecoder(
      options.maxV2Length === undefined ? {} : { maxV2Length: options.maxV2Length },
    );
    let settled = false;
    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const failWith = (reason: ProxyReason, message: string, e?: unknown) => {
      if (settled) return;
      cleanup();
      fail(e instanceof ProxyProtocolError ? e : new ProxyProtocolError(reason, message));
    };
    const onData = (chunk: Buffer) => {
      if (settled) return;
      let step: ReturnType<ProxyHeaderDecoder['push']>;
      try {
        step = decoder.push(chunk);
      } catch (e) {
        return failWith('bad_signature', 'malformed header', e);
      }
      if (step.kind === 'more') return;
      // As a datagram endpoint refuses a STREAM header, a stream refuses a DGRAM one.
      if (step.header.command === 'proxy' && step.header.transport === 'dgram')
        return failWith('bad_family', 'a DGRAM header before a stream');
      // Stop the flow before anything else can be emitted: later bytes stay in the socket.
      socket.pause();
      cleanup();
      const { header } = step;
      countHeader(header.version, options.endpoint);
      let rest: Buffer | null = null;
      if (step.rest.length > 0) {
        rest = Buffer.from(step.rest.buffer, step.rest.byteOffset, step.rest.byteLength);
        if (options.unshift === true) {
          socket.unshift(rest);
          rest = null;
        }
      }
      resolve({ header, rest });
    };
    const onEnd = () => {
      try {
        decoder.end();
      } catch (e) {
        return failWith('truncated', 'the peer ended the stream inside the header', e);
      }
    };
    const onError = () => failWith('truncated', 'socket error before the header ended');
    const onClose = () => failWith('truncated', 'the socket closed before the header ended');
    const timer = setTimeout(
      () => failWith('timeout', `no complete header within ${options.headerTimeout} ms`),
      options.headerTimeout,
    );
    timer.unref();
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.resume();
  });
}
