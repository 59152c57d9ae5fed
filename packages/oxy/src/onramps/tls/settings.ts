/**
 * Settings of TLS on an HTTP endpoint. The core includes `TlsSettings` as the `tls` key of each
 * endpoint (`endpoints.<name>.tls`); this module only declares the schema so the TLS on-ramp owns
 * its knobs. Certificate and key files are read once, when the endpoint starts (a restart picks
 * up renewed files).
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
    handshake_timeout: s.duration(
      'Time allowed for the TLS handshake; a client that takes longer is disconnected.',
      '10s',
    ),
  },
);

/** Parsed `endpoints.<name>.tls` settings. */
export type TlsSettings = Infer<typeof TlsSettings>;
