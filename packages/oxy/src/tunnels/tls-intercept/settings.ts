/**
 * Settings of HTTPS interception (`interception`): whether CONNECT tunnels carrying TLS are
 * intercepted, for which hosts, and the CA that signs the certificates minted for them. The
 * CA comes from `ca.cert`/`ca.key`, or is generated once into `ca.dir` and reused from there
 * by every later start and by `oxy ca export`.
 */
import { type Infer, s } from 'foundations/settings';

/** Schema of `interception`. */
export const InterceptionSettings = s.enabled(
  'HTTPS interception in CONNECT tunnels: the client TLS is terminated with a certificate minted for the name it asked for and signed by the interception CA, so requests inside go through the request hooks. Clients must trust the CA (`oxy ca export`).',
  false,
  {
    hosts: s.list(
      'Which tunnels to intercept, by SNI (or CONNECT host when the client sends none): exact names, IP literals, and `*.example.com` for any name under example.com. Case-insensitive; a trailing dot is ignored. Empty: every tunnel.',
      s.str('A name, an IP literal, or *.domain.', ''),
      [],
    ),
    ca: s.object('The interception CA.', {
      cert: s.path('PEM certificate of the CA (with `key`); empty: use or generate the CA in `dir`.', ''),
      key: s.path('PEM private key of the CA (with `cert`), unencrypted.', ''),
      dir: s.path(
        'Directory of the generated CA (ca.pem, ca-key.pem; the directory 0700, the files 0600), created on first use when `cert` and `key` are empty.',
        'oxy-ca',
      ),
    }),
    leaf_cache_size: s.int('Minted leaf certificates kept (LRU), by server name.', 1024, { min: 1 }),
    session_tickets: s.int(
      'TLS 1.3 session tickets sent to an intercepted client after each full handshake, for it to resume later ones. 0 (the default) sends none: a TLS 1.3 resumption saves no round trip, and the tickets cost both sides CPU and a write on every tunnel. OpenSSL alone would send 2.',
      0,
      { min: 0, max: 16 },
    ),
  },
);

/** Parsed `interception` settings. */
export type InterceptionSettings = Infer<typeof InterceptionSettings>;
