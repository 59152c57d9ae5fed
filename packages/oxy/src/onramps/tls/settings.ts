/**
 * Settings of TLS on an HTTP endpoint. The core includes `TlsSettings` as the `tls` key of each
 * endpoint (`endpoints.<name>.tls`); this module only declares the schema so the TLS on-ramp owns
 * its knobs. Certificate, key and client CA files are read once, when the endpoint starts (a
 * restart, which is a new process, picks up renewed files).
 */
import { type Infer, s } from 'foundations/settings';

/** Schema of `endpoints.<name>.tls`. */
export const TlsSettings = s.enabled(
  'TLS on this endpoint. When on, every connection must start with a TLS handshake; ALPN offers ' +
    '`h2` (when http2 is enabled) and `http/1.1`, and the chosen protocol serves the connection.',
  false,
  {
    cert: s.path('PEM certificate chain file (leaf first), read when the endpoint starts.', ''),
    key: s.path('PEM private key file matching the certificate, read when the endpoint starts.', ''),
    min_version: s.oneOf('Oldest TLS version accepted.', ['TLSv1.2', 'TLSv1.3'] as const, 'TLSv1.2'),
    client_auth: s.oneOf(
      'Client certificates (mTLS): "none" asks for none; "optional" asks, serves a client without ' +
        'one with no identity, and refuses a certificate that does not verify against client_ca; ' +
        '"required" refuses a client without a verified certificate.',
      ['none', 'optional', 'required'] as const,
      'none',
    ),
    client_ca: s.path(
      'PEM file of the CA certificates (one or more) that client certificates must chain to; ' +
        'required when client_auth is not "none". Read when the endpoint starts.',
      '',
    ),
    handshake_timeout: s.duration(
      'Time allowed for the TLS handshake; a client that takes longer is disconnected.',
      '10s',
    ),
  },
);

/** Parsed `endpoints.<name>.tls` settings. */
export type TlsSettings = Infer<typeof TlsSettings>;
