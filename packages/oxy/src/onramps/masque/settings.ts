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
    'runner of udp endpoints, and CONNECT-IP (RFC 9484) likewise, its packets fed to the IP pipeline.',
  true,
  {
    udp_template: s.str(
      'URI template of CONNECT-UDP requests (RFC 9298 §2): a path with {target_host} and {target_port}.',
      DEFAULT_TEMPLATES['connect-udp'],
    ),
    ip_template: s.str(
      'URI template of CONNECT-IP requests (RFC 9484 §3), with optional {target} (`*` or an IP ' +
        'prefix: the scope of destinations) and {ipproto} (`*` or an IP protocol number).',
      DEFAULT_TEMPLATES['connect-ip'],
    ),
    ip_pool: s.object(
      'Addresses of CONNECT-IP tunnels: each tunnel gets one address of each prefix given (a /32, ' +
        'a /128) until it ends; the first address after the network address is the gateway (the ' +
        "proxy's end, which answers ping). No free address: 503. Both empty: CONNECT-IP answered 501.",
      {
        ipv4: s.str('IPv4 prefix of the pool (empty: no IPv4 addresses).', '100.64.0.0/16'),
        ipv6: s.str('IPv6 prefix of the pool (empty: no IPv6 addresses).', 'fd00:64::/64'),
      },
    ),
  },
);

/** Parsed `endpoints.<name>.masque` settings. */
export type MasqueSettings = Infer<typeof MasqueSettings>;
