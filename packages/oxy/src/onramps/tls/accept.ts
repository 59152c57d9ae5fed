/**
 * The server side of TLS on an accepted connection: wraps the socket, runs the handshake with
 * a deadline, and reports the protocol ALPN chose, so one port serves HTTP/2 (`h2`) and
 * HTTP/1.1 (`http/1.1`, or a client that offers no ALPN at all).
 *
 * Ordering rule: the caller gets the TLS socket only once the handshake succeeded; a failed or
 * slow handshake destroys the raw socket and calls `onFailure` instead, never both.
 */
import type net from 'node:net';
import tls from 'node:tls';

/** The application protocol of a TLS connection after the handshake. */
export type NegotiatedProtocol = 'h2' | 'http/1.1';

/** Options of {@link acceptTls}. */
export interface AcceptTlsOptions {
  readonly secureContext: tls.SecureContext;
  /** ALPN ids offered, in preference order (see `alpnProtocols`). */
  readonly alpn: readonly string[];
  /** Milliseconds allowed for the handshake. */
  readonly handshakeTimeoutMs: number;
}

/**
 * Runs the TLS handshake on `socket`. `onSecure` receives the TLS socket and the negotiated
 * protocol (`http/1.1` when the client offered no ALPN); `onFailure` receives why the
 * handshake failed (`tls_timeout`, `tls_error`, or the OpenSSL error code).
 */
export function acceptTls(
  socket: net.Socket,
  options: AcceptTlsOptions,
  onSecure: (tlsSocket: tls.TLSSocket, protocol: NegotiatedProtocol) => void,
  onFailure: (reason: string, error: Error | undefined) => void,
): void {
  const tlsSocket = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: options.secureContext,
    ALPNProtocols: [...options.alpn],
  });
  let settled = false;
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
  tlsSocket.once('secure', () => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    tlsSocket.off('error', onError);
    // tls.Server clears this flag when it emits 'secureConnection'; a TLSSocket made by hand
    // keeps it set, and HTTP/2 would wait forever for a client-side 'secureConnect'.
    (tlsSocket as unknown as { secureConnecting: boolean }).secureConnecting = false;
    onSecure(tlsSocket, tlsSocket.alpnProtocol === 'h2' ? 'h2' : 'http/1.1');
  });
}
