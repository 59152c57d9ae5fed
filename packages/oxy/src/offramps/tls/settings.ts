/**
 * Settings of TLS towards origins (`egress.tls`): which CAs an origin's certificate may chain
 * to besides the system store, and whether ALPN offers `h2`. The files are read once, when the process starts (a restart
 * reads them anew); their content, not their names, identifies the trust configuration that
 * TLS sessions are cached under.
 */
import { type Infer, s } from 'foundations/settings';

/** Schema of `egress.tls`. */
export const UpstreamTlsSettings = s.object(
  'TLS to origins (https:// upstreams and intercepted HTTPS): certificates are verified against the system store plus extra_ca; a failure is a 502, never a fallback to plain text.',
  {
    extra_ca: s.list(
      'PEM files of CA certificates (each may hold several) trusted for origins in addition to the system store, e.g. an internal CA.',
      s.path('A PEM file of CA certificates.', ''),
      [],
    ),
    http2: s.bool(
      'Offer ALPN h2 (then http/1.1) to HTTPS origins: one that chooses h2 gets the requests for it multiplexed on shared HTTP/2 sessions; false offers http/1.1 only.',
      true,
    ),
  },
);

/** Parsed `egress.tls` settings. */
export type UpstreamTlsSettings = Infer<typeof UpstreamTlsSettings>;
