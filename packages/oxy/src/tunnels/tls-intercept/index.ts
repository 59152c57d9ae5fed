/**
 * HTTPS interception for CONNECT tunnels, assembled from its pieces: the ClientHello reader,
 * the CA, the leaf minter, the hosts matcher, client-side termination and the upstream TLS
 * connector. `loadInterception` builds what a process needs once, at start-up;
 * `interceptTunnel` runs one tunnel: it reads the ClientHello, decides, terminates the client's
 * TLS with a minted leaf, opens verified TLS to the origin over the upstream stream, and then
 * moves the decrypted bytes.
 *
 * The HTTP engine (wired later) replaces the byte pump at the end with its exchange loop, so
 * the requests inside run through the request and body hooks (request kind `intercepted`);
 * everything before it is the same. Until then an app can run `interceptTunnel` from
 * `TunnelHook.getAppTunnelPipeline`.
 *
 * Ordering rule, per tunnel: ClientHello → decision → origin TLS (its ALPN answer is what the
 * client is offered) → leaf → client TLS → bytes. An origin that fails TLS is answered inside
 * the client's TLS with a 502 naming the reason, never by connecting without verification.
 */
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SocketAddr } from '../../context/contexts.ts';
import { isOxyError, OXY_ERR, OxyError } from '../../errors.ts';
import {
  connectTls,
  type TlsSessionCache,
  type UpstreamAlpn,
  type UpstreamTrust,
} from '../../offramps/tls/connect.ts';
import { type InterceptionCa, loadInterceptionCa } from './ca.ts';
import { compileHostPatterns, type HostMatcher } from './hosts.ts';
import { LeafMinter } from './leaf.ts';
import type { InterceptionSettings } from './settings.ts';
import { readClientHello, terminateTls } from './terminate.ts';

/** What a process intercepts with, built once by {@link loadInterception}. */
export interface Interception {
  readonly ca: InterceptionCa;
  readonly leaves: LeafMinter;
  readonly hosts: HostMatcher;
  /**
   * The default decision (no app hook): intercept when the SNI, or the CONNECT host without
   * one, matches `interception.hosts` (an empty list matches every tunnel).
   */
  shouldIntercept(serverName: string | null, connectHost: string): boolean;
}

/**
 * Builds the interception of `settings` (`interception`), or null when it is off. Loads or
 * generates the CA and compiles the hosts; throws `OXY_ERR_INTERCEPTION_CA` or
 * `OXY_ERR_INVALID_APP` naming the settings key. Call at start-up.
 */
export async function loadInterception(settings: InterceptionSettings): Promise<Interception | null> {
  if (!settings.enabled) return null;
  const hosts = compileHostPatterns(settings.hosts);
  const ca = await loadInterceptionCa(settings.ca);
  return {
    ca,
    leaves: new LeafMinter(ca, { max: settings.leaf_cache_size, sessionTickets: settings.session_tickets }),
    hosts,
    shouldIntercept: (serverName, connectHost) => hosts.matches(serverName ?? connectHost),
  };
}

/** Options of {@link interceptTunnel}. */
export interface InterceptTunnelOptions {
  readonly interception: Interception;
  /** Trust for the origin (`egress.tls.extra_ca`). */
  readonly trust: UpstreamTrust;
  /** The CONNECT target. */
  readonly target: SocketAddr;
  readonly sessions?: TlsSessionCache;
  /** Overrides the default decision; `false` passes the tunnel through untouched. */
  readonly decide?: (serverName: string | null) => boolean;
  /** Handshake deadlines (each side). Default 10 s. */
  readonly timeoutMs?: number;
}

/** How a tunnel went: intercepted (with the ALPN used), passed through, or answered 502. */
export type InterceptOutcome =
  | { readonly kind: 'intercepted'; readonly serverName: string | null; readonly alpn: UpstreamAlpn }
  | { readonly kind: 'passthrough'; readonly serverName: string | null }
  | { readonly kind: 'origin_failed'; readonly serverName: string | null; readonly error: OxyError };

/**
 * Answers 502 inside the client's TLS. The request is read first (or a deadline passes):
 * closing a socket with unread bytes resets it, and the reset could destroy the answer before
 * the client reads it. Resolves once the client closed, or after the deadline.
 */
export async function answerBadGateway(clientTls: Duplex, reason: string, timeoutMs: number): Promise<void> {
  const body = `502 Bad Gateway: ${reason}\n`;
  const deadline = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());
  clientTls.on('error', () => {}); // a client that leaves early changes nothing here
  await Promise.race([once(clientTls, 'data'), once(clientTls, 'end'), deadline(Math.min(timeoutMs, 1000))]);
  clientTls.resume(); // the rest of the request is read and dropped
  clientTls.end(
    `HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  await Promise.race([once(clientTls, 'close'), deadline(timeoutMs)]);
}

/** Pumps both ways until both directions ended (or either failed); destroys both at the end. */
async function pump(a: Duplex, b: Duplex): Promise<void> {
  await Promise.allSettled([pipeline(a, b), pipeline(b, a)]);
  a.destroy();
  b.destroy();
}

/**
 * Runs one tunnel whose CONNECT succeeded: `client` is the client side, `upstream` the TCP
 * stream to the target. Resolves when the tunnel ended; rejects with `OXY_ERR_TLS_CLIENT_HELLO`
 * for a client that sent no valid ClientHello or aborted the handshake (both streams are
 * destroyed then).
 */
export async function interceptTunnel(
  client: Duplex,
  upstream: Duplex,
  options: InterceptTunnelOptions,
): Promise<InterceptOutcome> {
  const { interception, target } = options;
  let peeked: Awaited<ReturnType<typeof readClientHello>>;
  try {
    peeked = await readClientHello(client, { timeoutMs: options.timeoutMs ?? 10_000 });
  } catch (e) {
    client.destroy();
    upstream.destroy();
    throw e;
  }
  const { hello, bytes } = peeked;
  const serverName = hello.serverName;
  const intercept = options.decide?.(serverName) ?? interception.shouldIntercept(serverName, target.host);
  if (!intercept) {
    upstream.write(bytes);
    await pump(client, upstream);
    return { kind: 'passthrough', serverName };
  }
  const offered = hello.alpn.filter((p): p is UpstreamAlpn => p === 'h2' || p === 'http/1.1');
  let origin: Awaited<ReturnType<typeof connectTls>> | null = null;
  let failure: OxyError | null = null;
  try {
    origin = await connectTls({
      host: serverName ?? target.host,
      port: target.port,
      socket: upstream,
      trust: options.trust,
      alpn: offered.length > 0 ? offered : ['http/1.1'],
      ...(options.sessions === undefined ? {} : { sessions: options.sessions }),
      timeoutMs: options.timeoutMs ?? 10_000,
    });
  } catch (e) {
    failure = isOxyError(e)
      ? e
      : new OxyError(OXY_ERR.UPSTREAM_TLS, String(e), { source: 'upstream', cause: e });
  }
  // The client is offered what the origin chose, so the bytes inside match on both sides; a
  // failed origin is answered in HTTP/1.1 when the client can take it.
  let clientAlpn: string[];
  if (origin !== null) clientAlpn = offered.length > 0 ? [origin.alpn] : [];
  else clientAlpn = hello.alpn.includes('http/1.1') ? ['http/1.1'] : [];
  const leaf = await interception.leaves.leafFor(serverName, target.host);
  let clientTls: Awaited<ReturnType<typeof terminateTls>>;
  try {
    clientTls = await terminateTls(client, bytes, leaf, clientAlpn, options.timeoutMs ?? 10_000);
  } catch (e) {
    origin?.socket.destroy();
    upstream.destroy();
    throw e;
  }
  if (origin === null || failure !== null) {
    upstream.destroy();
    const error = failure ?? new OxyError(OXY_ERR.UPSTREAM_TLS, 'origin TLS failed', { source: 'upstream' });
    await answerBadGateway(clientTls, error.message, options.timeoutMs ?? 10_000);
    return { kind: 'origin_failed', serverName, error };
  }
  await pump(clientTls, origin.socket);
  return { kind: 'intercepted', serverName, alpn: origin.alpn };
}

export type { InterceptionCa } from './ca.ts';
export { type ClientHello, ClientHelloError, ClientHelloParser, parseClientHello } from './client-hello.ts';
export type { HostMatcher } from './hosts.ts';
export { type LeafCertificate, LeafMinter } from './leaf.ts';
export { readClientHello, terminateTls, withPrefix } from './terminate.ts';
