/**
 * The server side of TLS on an accepted connection: wraps the socket, runs the handshake with
 * a deadline, and reports the protocol ALPN chose, so one port serves HTTP/2 (`h2`) and
 * HTTP/1.1 (`http/1.1`, or a client that offers no ALPN at all).
 *
 * With client certificates on (`client_auth`), the handshake asks for one, and a certificate
 * that did not verify against the client CA fails the connection here, whatever the mode.
 *
 * Ordering rule: the caller gets the TLS socket only once the handshake succeeded and the
 * client certificate (if any) verified; a failed, refused or slow handshake destroys the raw
 * socket and calls `onFailure` instead, never both.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { ClientIdentity } from '../../context/contexts.ts';
import { type ClientAuthMode, checkClientCertificate } from './client-auth.ts';

/** The application protocol of a TLS connection after the handshake. */
export type NegotiatedProtocol = 'h2' | 'http/1.1';

/** Options of {@link acceptTls}. */
export interface AcceptTlsOptions {
  readonly secureContext: tls.SecureContext;
  /** ALPN ids offered, in preference order (see `alpnProtocols`). */
  readonly alpn: readonly string[];
  /** Milliseconds allowed for the handshake. */
  readonly handshakeTimeoutMs: number;
  /** Client certificates: asked for unless `none` (the default); `required` refuses a client without one. */
  readonly clientAuth?: ClientAuthMode;
  /**
   * Chooses the context for the server name a ClientHello carries (`TlsHook.selectCertificate`);
   * `undefined` keeps `secureContext`. Absent: every client gets `secureContext`. A rejection
   * fails the handshake.
   */
  readonly selectContext?: (servername: string) => Promise<tls.SecureContext | undefined>;
}

/**
 * Runs the TLS handshake on `socket`. `onSecure` receives the TLS socket, the negotiated
 * protocol (`http/1.1` when the client offered no ALPN) and the client's verified identity
 * (null without one); `onFailure` receives why the handshake failed (`tls_timeout`,
 * `tls_error`, `client_cert_missing`, or the OpenSSL error code such as `CERT_HAS_EXPIRED`).
 */
export function acceptTls(
  socket: net.Socket,
  options: AcceptTlsOptions,
  onSecure: (tlsSocket: tls.TLSSocket, protocol: NegotiatedProtocol, identity: ClientIdentity | null) => void,
  onFailure: (reason: string, error: Error | undefined) => void,
): void {
  const clientAuth = options.clientAuth ?? 'none';
  const select = options.selectContext;
  let settled = false;
  const tlsSocket = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: options.secureContext,
    ALPNProtocols: [...options.alpn],
    requestCert: clientAuth !== 'none',
    // `required` lets OpenSSL refuse a client without a certificate with the proper alert;
    // a certificate that does not verify is refused below in both modes.
    rejectUnauthorized: clientAuth === 'required',
    ...(select === undefined
      ? {}
      : {
          SNICallback: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => {
            select(servername).then(
              (ctx) => {
                if (!settled) cb(null, ctx);
              },
              (e: unknown) => {
                if (!settled) cb(e instanceof Error ? e : new Error(String(e)));
              },
            );
          },
        }),
  });
  const fail = (reason: string, error: Error | undefined): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    tlsSocket.destroy();
    socket.destroy();
    onFailure(reason, error);
  };
  const timer = setTimeout(() => fail('tls_timeout', undefined), options.handshakeTimeoutMs);
  const onError = (e: NodeJS.ErrnoException): void => fail(e.code ?? 'tls_error', e);
  tlsSocket.on('error', onError);
  tlsSocket.once('close', () => fail('client_closed', undefined));
  // A client that ends before the handshake (a FIN before or inside its ClientHello) is gone:
  // closed now, not held until handshake_timeout.
  tlsSocket.once('end', () => fail('client_closed', undefined));
  tlsSocket.once('secure', () => {
    if (settled) return;
    const auth = checkClientCertificate(tlsSocket, clientAuth);
    if (auth.kind === 'refused') {
      fail(auth.reason, undefined);
      return;
    }
    settled = true;
    clearTimeout(timer);
    tlsSocket.off('error', onError);
    // tls.Server clears this flag when it emits 'secureConnection'; a TLSSocket made by hand
    // keeps it set, and HTTP/2 would wait forever for a client-side 'secureConnect'.
    (tlsSocket as unknown as { secureConnecting: boolean }).secureConnecting = false;
    onSecure(tlsSocket, tlsSocket.alpnProtocol === 'h2' ? 'h2' : 'http/1.1', auth.identity);
  });
}
