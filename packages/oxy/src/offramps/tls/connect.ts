/**
 * TLS to an origin: the off-ramp half of `https://` upstreams and intercepted HTTPS. It runs
 * the client handshake over a TCP connection egress already made (so egress hooks, the
 * blocklist and Happy Eyeballs stay in charge of where bytes go), or connects by itself for
 * tools and tests, and answers with the protocol ALPN chose.
 *
 * Rules it keeps:
 * - The certificate is verified against the system store plus `egress.tls.extra_ca`, always;
 *   a failure is an `OXY_ERR_UPSTREAM_TLS` (502) naming OpenSSL's reason, never a retry in the
 *   clear or without verification.
 * - SNI carries the name asked for, never an IP literal (RFC 6066 §3); the certificate must
 *   match that name or IP.
 * - TLS sessions are cached per (trust configuration, server): a session proved under one
 *   set of CAs is never offered under another, so resumption cannot skip a verification the
 *   new configuration would have failed.
 *
 * Ordering rule: the trust is loaded once per process (`loadUpstreamTrust`, at start-up, so a
 * bad file is a start-up error naming `egress.tls.extra_ca[i]`); the session cache outlives
 * connections but not the process.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { LRUCache } from 'lru-cache';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { UpstreamTlsSettings } from './settings.ts';

/** The CAs origins are verified against, and the hash that names them. */
export interface UpstreamTrust {
  /** SHA-256 (hex) of the trusted CA certificates: equal hashes, equal trust. */
  readonly hash: string;
  /** The client context: system store plus the extra CAs. Shared by every connection. */
  readonly secureContext: tls.SecureContext;
  /** How many extra CA certificates `egress.tls.extra_ca` added. */
  readonly extraCount: number;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

function bad(path: string, message: string, cause?: unknown): never {
  throw new OxyError(OXY_ERR.INVALID_APP, `${path}: ${message}`, { cause });
}

/**
 * Reads `egress.tls.extra_ca` and builds the trust origins are verified against. Throws
 * `OXY_ERR_INVALID_APP` naming `egress.tls.extra_ca[i]` for a file that cannot be read or
 * holds no certificate. `where` is the settings path of the list.
 */
export function loadUpstreamTrust(
  settings: Pick<UpstreamTlsSettings, 'extra_ca'>,
  where = 'egress.tls.extra_ca',
): UpstreamTrust {
  const extra: string[] = [];
  settings.extra_ca.forEach((file, i) => {
    const path = `${where}[${i}]`;
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch (e) {
      bad(path, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, e);
    }
    const blocks = text.match(PEM_CERT) ?? [];
    if (blocks.length === 0) bad(path, `${file} holds no PEM certificate`);
    for (const block of blocks) {
      try {
        new X509Certificate(block);
      } catch (e) {
        bad(path, `${file} holds a PEM block that is not a certificate`, e);
      }
      extra.push(block);
    }
  });
  return trustOf(extra);
}

/** The DER bytes of a PEM certificate, base64-decoded (cheaper than parsing it). */
function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----|\s+/g, ''), 'base64');
}

/** Digests of the bundled root store's certificates, computed once per process. */
let rootDigests: string[] | null = null;

/** The trust of the system store plus `extraPem` (PEM certificates). */
export function trustOf(extraPem: readonly string[]): UpstreamTrust {
  rootDigests ??= tls.rootCertificates.map((pem) => createHash('sha256').update(derOf(pem)).digest('hex'));
  const digests = [
    ...rootDigests,
    ...extraPem.map((pem) => createHash('sha256').update(derOf(pem)).digest('hex')),
  ];
  // Order-free: the same CAs listed differently are the same trust.
  const hash = createHash('sha256');
  for (const d of new Set(digests.sort())) hash.update(d);
  return {
    hash: hash.digest('hex'),
    // Without extra CAs, OpenSSL's default store is the bundled one: no need to load it again.
    secureContext:
      extraPem.length === 0
        ? tls.createSecureContext()
        : tls.createSecureContext({ ca: [...tls.rootCertificates, ...extraPem] }),
    extraCount: extraPem.length,
  };
}

/**
 * TLS sessions for resumption, keyed by trust hash, server name and port, bounded (LRU).
 * One per process is enough ({@link defaultSessionCache}); tests make their own.
 */
export class TlsSessionCache {
  readonly #sessions: LRUCache<string, Buffer>;

  constructor(max = 4096) {
    this.#sessions = new LRUCache({ max });
  }

  /** The key of a server under a trust: the hash first, so no lookup can cross trusts. */
  static key(trust: UpstreamTrust, serverName: string, port: number): string {
    return `${trust.hash}\n${serverName}\n${port}`;
  }

  get(key: string): Buffer | undefined {
    return this.#sessions.get(key);
  }

  set(key: string, session: Buffer): void {
    this.#sessions.set(key, session);
  }

  /** Sessions held. */
  get size(): number {
    return this.#sessions.size;
  }
}

/** The process's session cache. */
export const defaultSessionCache = new TlsSessionCache();

/** An ALPN protocol Oxy speaks upstream. */
export type UpstreamAlpn = 'h2' | 'http/1.1';

/** Options of {@link connectTls}. */
export interface TlsConnectOptions {
  /** The origin's name or IP literal: SNI (names only) and what the certificate must match. */
  readonly host: string;
  readonly port: number;
  readonly trust: UpstreamTrust;
  /** A connected TCP stream to the origin (from egress); absent: connect to `host:port` here. */
  readonly socket?: Duplex;
  /** ALPN offered, in preference order. Default `['h2', 'http/1.1']`. */
  readonly alpn?: readonly UpstreamAlpn[];
  /** Default {@link defaultSessionCache}. */
  readonly sessions?: TlsSessionCache;
  /** Handshake deadline (and connect, when connecting here). Default 10 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** A verified TLS connection to an origin. */
export interface UpstreamTlsConnection {
  readonly socket: tls.TLSSocket;
  /** What ALPN chose; `http/1.1` when the origin chose nothing. */
  readonly alpn: UpstreamAlpn;
  /** True when a cached session was resumed (under the same trust, by construction). */
  readonly resumed: boolean;
}

/** The SNI for `host`: none for an IP literal, the name without a trailing dot otherwise. */
export function sniFor(host: string): string | undefined {
  if (net.isIP(host) !== 0) return undefined;
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

function tlsFailure(host: string, port: number, e: NodeJS.ErrnoException): OxyError {
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const code = e.code ?? 'TLS_ERROR';
  const verify = /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS_CERT_ALTNAME|HOSTNAME|DEPTH_ZERO/.test(code);
  // Node's message may end in advice about its own flags (`--use-system-ca`), which does not
  // apply to Oxy: the setting to name is egress.tls.extra_ca.
  const message = e.message.replace(/; if the root CA is installed locally.*$/s, '');
  const reason = verify
    ? `certificate verification failed: ${code} (${message}; a private CA belongs in egress.tls.extra_ca)`
    : `${code} (${message})`;
  return new OxyError(OXY_ERR.UPSTREAM_TLS, `TLS to ${where} failed: ${reason}`, {
    source: 'upstream',
    cause: e,
    status: 502,
  });
}

/**
 * Runs the client TLS handshake to `host:port`, verified against `trust`, offering ALPN.
 * Resolves once the certificate verified; rejects with `OXY_ERR_UPSTREAM_TLS` (verification,
 * handshake, alert), `OXY_ERR_CONNECT_TIMEOUT` (deadline), `OXY_ERR_CONNECT_REFUSED` /
 * `OXY_ERR_CONNECT_FAILED` (connecting here) or `OXY_ERR_ABORTED`; the socket is destroyed then.
 */
export function connectTls(options: TlsConnectOptions): Promise<UpstreamTlsConnection> {
  const { host, port, trust } = options;
  const servername = sniFor(host);
  const sessions = options.sessions ?? defaultSessionCache;
  const key = TlsSessionCache.key(trust, servername ?? host, port);
  const session = sessions.get(key);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new OxyError(OXY_ERR.ABORTED, 'aborted before the TLS handshake'));
      return;
    }
    const socket = tls.connect({
      ...(options.socket === undefined ? { host, port } : { socket: options.socket }),
      // `host` is what checkServerIdentity matches the certificate against (name or IP).
      host: servername ?? host,
      ...(servername === undefined ? {} : { servername }),
      secureContext: trust.secureContext,
      rejectUnauthorized: true,
      ALPNProtocols: [...(options.alpn ?? ['h2', 'http/1.1'])],
      ...(session === undefined ? {} : { session }),
    });
    let settled = false;
    const finish = (err: OxyError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      if (err === null) return;
      socket.destroy();
      options.socket?.destroy();
      reject(err);
    };
    const onError = (e: NodeJS.ErrnoException): void => {
      if (e.code === 'ECONNREFUSED') {
        finish(
          new OxyError(OXY_ERR.CONNECT_REFUSED, `${host}:${port} refused the connection`, {
            source: 'upstream',
            cause: e,
          }),
        );
      } else if (e.syscall === 'connect' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') {
        finish(
          new OxyError(OXY_ERR.CONNECT_FAILED, `connecting to ${host}:${port} failed: ${e.code}`, {
            source: 'upstream',
            cause: e,
          }),
        );
      } else finish(tlsFailure(host, port, e));
    };
    const onAbort = (): void => finish(new OxyError(OXY_ERR.ABORTED, 'aborted during the TLS handshake'));
    const timer = setTimeout(
      () =>
        finish(
          new OxyError(OXY_ERR.CONNECT_TIMEOUT, `TLS handshake with ${host}:${port} timed out`, {
            source: 'upstream',
            retryable: true,
          }),
        ),
      options.timeoutMs ?? 10_000,
    );
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', onError);
    // TLS 1.3 tickets arrive after the handshake, possibly more than one: keep the latest.
    socket.on('session', (s: Buffer) => sessions.set(key, s));
    socket.once('secureConnect', () => {
      // rejectUnauthorized already refused anything unverified; checked again because this
      // is the one property that must never be skipped.
      if (!socket.authorized) {
        const e = Object.assign(new Error(String(socket.authorizationError)), {
          code: String(socket.authorizationError),
        });
        finish(tlsFailure(host, port, e));
        return;
      }
      finish(null);
      resolve({
        socket,
        alpn: socket.alpnProtocol === 'h2' ? 'h2' : 'http/1.1',
        resumed: socket.isSessionReused(),
      });
    });
  });
}
