/**
 * Client certificates (mTLS) on the server side: what the handshake proved about the client,
 * turned into a {@link ClientIdentity}, or the reason the connection must be refused.
 *
 * Why here and not in `node:tls`: Oxy wraps accepted sockets in a `TLSSocket` by hand (one
 * port, two HTTP versions), and Node only fills `authorized`/`authorizationError` for sockets
 * a `tls.Server` made. The verification result itself is OpenSSL's, read once through the
 * handle (`verifyError()`, what `tls.Server` reads): Oxy never judges a chain on its own.
 *
 * Ordering rule: checked right after the handshake, before any hook sees the identity; a
 * certificate that did not verify is refused whatever the mode, so `optional` never means
 * "any certificate".
 */
import type { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';
import type { ClientIdentity } from '../../context/contexts.ts';

/** `endpoints.<name>.tls.client_auth`. */
export type ClientAuthMode = 'none' | 'optional' | 'required';

/** What the handshake proved: an identity (or none), or why the client is refused. */
export type ClientAuthResult =
  | { readonly kind: 'identity'; readonly identity: ClientIdentity | null }
  | { readonly kind: 'refused'; readonly reason: string };

/** Node writes distinguished names one attribute per line; a record wants one line. */
function oneLine(dn: string): string {
  return dn.split('\n').join(', ');
}

/**
 * Splits OpenSSL's `subjectAltName` text (`DNS:a, IP Address:1.2.3.4`). Node quotes an entry
 * that contains a comma or quote as a JSON string (`DNS:"a, b"`), so split outside quotes only.
 */
export function splitSans(text: string | undefined): string[] {
  if (text === undefined || text === '') return [];
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted && text[i + 1] === ' ') {
      out.push(text.slice(start, i));
      start = i + 2;
      i++;
    }
  }
  out.push(text.slice(start));
  return out;
}

/** The identity a (verified) certificate carries. */
export function identityOf(cert: X509Certificate): ClientIdentity {
  return Object.freeze({
    subject: oneLine(cert.subject),
    sans: Object.freeze(splitSans(cert.subjectAltName)),
    issuer: oneLine(cert.issuer),
    fingerprintSha256: cert.fingerprint256,
    notBefore: cert.validFromDate.toISOString(),
    notAfter: cert.validToDate.toISOString(),
    serialNumber: cert.serialNumber.toUpperCase(),
  });
}

/**
 * Judges the client certificate of a finished server handshake under `mode`: with `none`,
 * nothing was asked (no identity); otherwise a presented certificate must have verified
 * (refused with OpenSSL's code, `CERT_HAS_EXPIRED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, …), and
 * with `required` a client without one is refused (`client_cert_missing`).
 */
export function checkClientCertificate(tlsSocket: tls.TLSSocket, mode: ClientAuthMode): ClientAuthResult {
  if (mode === 'none') return { kind: 'identity', identity: null };
  const peer = tlsSocket.getPeerX509Certificate();
  if (peer === undefined) {
    return mode === 'required'
      ? { kind: 'refused', reason: 'client_cert_missing' }
      : { kind: 'identity', identity: null };
  }
  // The one read of Node's internal handle: the result `tls.Server` would put in
  // `authorizationError`. Null means OpenSSL verified the chain against `client_ca`.
  const handle = (tlsSocket as unknown as { _handle: { verifyError(): Error | null } | null })._handle;
  const error = handle === null ? new Error('socket closed') : handle.verifyError();
  if (error !== null && error !== undefined) {
    return { kind: 'refused', reason: (error as NodeJS.ErrnoException).code ?? 'client_cert_invalid' };
  }
  return { kind: 'identity', identity: identityOf(peer) };
}
