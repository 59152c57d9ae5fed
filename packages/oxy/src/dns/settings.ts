/**
 * Settings of the DNS resolver, under `egress.dns`. The defaults work as they are: the
 * system's resolver (getaddrinfo, so /etc/hosts and nsswitch apply) with a small cache.
 * Setting `nameservers` switches to querying those servers directly, which is also what gives
 * real TTLs; `fallback_nameservers` are asked only when the primary set fails or times out.
 */

import { type Infer, s } from 'foundations/settings';

const nameserver = s.str(
  'A nameserver: an IP address with an optional port ("9.9.9.9", "9.9.9.9:53", "[2620:fe::fe]:53").',
  '127.0.0.1:53',
);

/** The schema of `egress.dns`. */
export const DnsSettings = s.object('How egress resolves host names.', {
  nameservers: s.list(
    'Nameservers to query, in order. Empty: use the system resolver (getaddrinfo), whose answers carry no TTL, so they are cached for cache.system_ttl.',
    nameserver,
    [],
  ),
  fallback_nameservers: s.list(
    'Nameservers asked when every primary nameserver failed or timed out (not when a name does not exist).',
    nameserver,
    [],
  ),
  timeout: s.duration(
    'Time to wait for one answer before asking again (per attempt, like resolv.conf "timeout").',
    '2s',
  ),
  attempts: s.int(
    'How many times each nameserver set is asked before giving up (like resolv.conf "attempts").',
    2,
    {
      min: 1,
      max: 10,
    },
  ),
  cache: s.enabled('The cache of answers, positive and negative.', true, {
    max_entries: s.int('Most names kept in the cache; the least recently used go first.', 10000, { min: 1 }),
    min_ttl: s.duration('Shortest time an answer is kept, whatever its TTL says.', '5s'),
    max_ttl: s.duration('Longest time an answer is kept, whatever its TTL says.', '1h'),
    negative_ttl: s.duration('How long "no such name" and "no address" answers are kept.', '30s'),
    system_ttl: s.duration('How long answers from the system resolver, which have no TTL, are kept.', '30s'),
  }),
});

/** The value of `egress.dns`. */
export type DnsSettings = Infer<typeof DnsSettings>;
