/**
 * Settings of MASQUE on an `http` endpoint (`endpoints.<name>.masque`): whether CONNECT-UDP
 * (RFC 9298) is served, and the URI templates the proxy matches request paths against. The
 * templates are parsed once, when the endpoint is created (`onramp.ts`), so a bad one is a
 * start-up error naming its key, never a per-request surprise.
 */
import { type Infer, s } from 'foundations/settings';
import { DEFAULT_TEMPLATES } from '../../protocols/masque/template.ts';

/** Schema of `endpoints.<name>.masque`. */
export const MasqueSettings = s.enabled(
  'MASQUE on this endpoint: CONNECT-UDP (RFC 9298) over HTTP/2 extended CONNECT (:protocol ' +
    'connect-udp) and HTTP/1.1 Upgrade, through the same request hooks as CONNECT and the datagram ' +
    'runner of udp endpoints. CONNECT-IP (RFC 9484) is answered 501 until the IP pipeline is wired.',
  true,
  {
    udp_template: s.str(
      'URI template of CONNECT-UDP requests (RFC 9298 §2): a path with {target_host} and {target_port}.',
      DEFAULT_TEMPLATES['connect-udp'],
    ),
    ip_template: s.str(
      'URI template of CONNECT-IP requests (RFC 9484 §3), with optional {target} and {ipproto}. ' +
        'Checked at start-up; CONNECT-IP itself is answered 501 for now.',
      DEFAULT_TEMPLATES['connect-ip'],
    ),
  },
);

/** Parsed `endpoints.<name>.masque` settings. */
export type MasqueSettings = Infer<typeof MasqueSettings>;
