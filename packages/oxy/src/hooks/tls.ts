/**
 * `TlsHook`: the app's say in the TLS handshake of a TLS endpoint: which certificate to serve
 * for the name the client asked for (SNI), and whether the identity a client certificate
 * proved (mTLS) may use the proxy.
 *
 * Order on a TLS endpoint: accept → `IngressHook.handleConnection` → ClientHello →
 * `selectCertificate` (only when the ClientHello names a server) → handshake, client
 * certificate verified against `tls.client_ca` → `handleClientIdentity` (only when
 * `tls.client_auth` is not `none`) → requests, whose contexts carry `ctx.clientIdentity`.
 */
import type { ClientIdentity, ExtTypes, IngressContext } from '../context/contexts.ts';

/** A certificate chain (leaf first) and its private key, PEM. */
export interface TlsCertificate {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/** Which certificate to serve. Build one with {@link CertificateChoice}. */
export type CertificateChoice =
  | { readonly kind: 'default' }
  | { readonly kind: 'use'; readonly certificate: TlsCertificate };

const DEFAULT_CERTIFICATE: CertificateChoice = Object.freeze({ kind: 'default' });

/** Constructors of {@link CertificateChoice}. */
export const CertificateChoice = {
  /** Serve the endpoint's own `tls.cert`. */
  default: (): CertificateChoice => DEFAULT_CERTIFICATE,
  /**
   * Serve `certificate`. Oxy builds a TLS context for it once per object and keeps it while
   * the app holds the object: return the same object for a name rather than a new one each time.
   */
  use: (certificate: TlsCertificate): CertificateChoice => ({ kind: 'use', certificate }),
} as const;

/** Whether a client identity may go on. Build one with {@link ClientIdentityDecision}. */
export type ClientIdentityDecision =
  | { readonly kind: 'accept' }
  | { readonly kind: 'refuse'; readonly reason: string };

const ACCEPT: ClientIdentityDecision = Object.freeze({ kind: 'accept' });

/** Constructors of {@link ClientIdentityDecision}. */
export const ClientIdentityDecision = {
  /** Serve the connection. */
  accept: (): ClientIdentityDecision => ACCEPT,
  /** Close the connection; `reason` goes to the log and the connection's close reason. */
  refuse: (reason: string): ClientIdentityDecision => ({ kind: 'refuse', reason }),
} as const;

/** Hooks on the TLS handshake of TLS endpoints. Every method is optional. */
export interface TlsHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per handshake whose ClientHello carries a server name (SNI), with that name
   * (lower case, as the client sent it) and the connection's context, while the handshake
   * waits. `use(certificate)` serves that certificate (checked by the endpoint's client CA and
   * minimum version like the default one); `default()` serves `tls.cert`. A client without SNI
   * gets `tls.cert` without a call. Throwing fails the handshake of this connection only.
   * Default: `CertificateChoice.default()`.
   */
  selectCertificate?(sni: string, ctx: IngressContext<X>): CertificateChoice | Promise<CertificateChoice>;
  /**
   * Fires once per connection after a successful handshake on an endpoint whose
   * `tls.client_auth` is `optional` or `required`, with the verified identity (also on
   * `ctx.clientIdentity`), or `null` when an `optional` client sent no certificate. A
   * certificate that failed verification never gets here: Oxy refused it already. `refuse`
   * closes the connection before any request is read; throwing does too. Default:
   * `ClientIdentityDecision.accept()`.
   */
  handleClientIdentity?(
    identity: ClientIdentity | null,
    ctx: IngressContext<X>,
  ): ClientIdentityDecision | Promise<ClientIdentityDecision>;
}

/** The method names of {@link TlsHook}, for validation at registration. */
export const TLS_HOOK_METHODS = ['selectCertificate', 'handleClientIdentity'] as const;
