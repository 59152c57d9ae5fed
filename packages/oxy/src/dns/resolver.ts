/**
 * Host name resolution for egress: the system resolver by default, or configured nameservers
 * with fallbacks, behind a cache that honours TTLs (clamped) and remembers "no such name".
 *
 * Ordering rules, in the order `resolve` applies them:
 * 1. IP literals (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`) are returned as they are.
 * 2. `localhost` and names under `.localhost` are the loopback addresses, never sent to DNS
 *    (RFC 6761 §6.3); `egress.blocked_cidrs` blocks them by default like any loopback.
 * 3. The cache answers if it holds an unexpired entry (positive or negative).
 * 4. A lookup already in flight for the same name and family is joined, not repeated.
 * 5. The primary nameservers are asked (A and AAAA in parallel); only if they fail or time out
 *    (never when the name does not exist) are the fallback nameservers asked.
 *
 * Without nameservers, `dns.lookup` (getaddrinfo on libuv's thread pool) is used: /etc/hosts
 * applies, but answers carry no TTL, so they are kept for `cache.system_ttl`. The hooks
 * `dnsResolveOverride` and `handleUpstreamIps` are applied by the caller (src/egress/), around
 * this class. Addresses come back interleaved by family, IPv6 first (RFC 8305 §4), ready for
 * `connectHappyEyeballs`.
 */

import dns from 'node:dns';
import net from 'node:net';
import { MAX_TIMER_MS, SettingsError } from 'foundations/settings';
import { LRUCache } from 'lru-cache';
import { OXY_ERR, OxyError, type OxyErrorCode } from '../errors.ts';
import type { DnsSettings } from './settings.ts';

/** The result of {@link DnsResolver.resolve}. */
export interface ResolvedAddresses {
  /** Addresses, families interleaved IPv6 first (RFC 8305 §4), without duplicates. Never empty. */
  readonly addresses: readonly string[];
  /** How long the answer stays valid, in ms: the clamped TTL (what is left of it for a cache hit); `Infinity` for literals and localhost. */
  readonly ttlMs: number;
  /** True when the cache answered. */
  readonly fromCache: boolean;
}

/** Options of {@link DnsResolver.resolve}. */
export interface ResolveOptions {
  /** 4 or 6 for one family; 0 (default) for both. */
  readonly family?: 0 | 4 | 6;
  /** Stops waiting (rejects with `OXY_ERR_ABORTED`); a lookup other callers share goes on. */
  readonly signal?: AbortSignal;
}

/**
 * Events for metrics, kept as callbacks so this module does not depend on prom-client. A
 * joined in-flight lookup counts as neither a hit nor a miss.
 */
export interface DnsResolverEvents {
  /** The cache answered (positively or negatively). */
  onHit?(): void;
  /** The cache could not answer and a lookup started. */
  onMiss?(): void;
  /** The primary nameservers failed and the fallbacks were asked. */
  onFallback?(): void;
}

/** Options of the {@link DnsResolver} constructor besides the settings. */
export interface DnsResolverOptions {
  readonly events?: DnsResolverEvents;
  /** Where these settings live, for error messages. Default `egress.dns`. */
  readonly settingsPath?: string;
  /** Monotonic clock in ms, for tests. Default `performance.now`. */
  readonly now?: () => number;
}

type CacheEntry =
  | { readonly kind: 'ok'; readonly addresses: readonly string[]; readonly expiresAt: number }
  | { readonly kind: 'negative'; readonly message: string; readonly expiresAt: number };

type Outcome = { addresses: string[]; ttlMs: number };

/** Why one nameserver set gave no addresses. `negative`: it answered that there are none. */
type Failure = { kind: 'negative' | 'timeout' | 'failed'; detail: string };

const LOOPBACK = ['::1', '127.0.0.1'] as const;
const NEGATIVE_CODES = new Set<string>([dns.NOTFOUND, dns.NODATA]);

/** Resolves host names to addresses for egress. One per process is enough; it is cheap to call. */
export class DnsResolver {
  readonly #settings: DnsSettings;
  readonly #events: DnsResolverEvents;
  readonly #now: () => number;
  readonly #cache: LRUCache<string, CacheEntry> | undefined;
  readonly #inflight = new Map<string, Promise<ResolvedAddresses>>();

  /**
   * Throws a `SettingsError` naming the key (`egress.dns.nameservers[1]`) when a nameserver is
   * not an IP address with an optional port.
   */
  constructor(settings: DnsSettings, options: DnsResolverOptions = {}) {
    const path = options.settingsPath ?? 'egress.dns';
    for (const key of ['nameservers', 'fallback_nameservers'] as const) {
      settings[key].forEach((server, i) => {
        try {
          new dns.Resolver().setServers([server]);
        } catch {
          // Boundary: setServers' own message does not name the key; ours does.
          throw new SettingsError([
            {
              path: `${path}.${key}[${i}]`,
              message: `expected an IP address with an optional port ("9.9.9.9:53", "[2620:fe::fe]:53"), got "${server}"`,
              file: undefined,
            },
          ]);
        }
      });
    }
    this.#settings = settings;
    this.#events = options.events ?? {};
    this.#now = options.now ?? (() => performance.now());
    this.#cache = settings.cache.enabled ? new LRUCache({ max: settings.cache.max_entries }) : undefined;
  }

  /**
   * Resolves `host` to addresses. Rejects with an `OxyError`: `OXY_ERR_DNS_NXDOMAIN` when the
   * name does not exist or has no address of the family, `OXY_ERR_DNS_TIMEOUT` (retryable) when
   * no nameserver answered in time, `OXY_ERR_DNS_FAILED` (retryable) when they all failed,
   * `OXY_ERR_ABORTED` on the signal.
   */
  async resolve(host: string, opts: ResolveOptions = {}): Promise<ResolvedAddresses> {
    const family = opts.family ?? 0;
    if (opts.signal?.aborted) throw abortError(opts.signal);
    const literal = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    if (net.isIP(literal) !== 0)
      return { addresses: [literal], ttlMs: Number.POSITIVE_INFINITY, fromCache: false };

    const name = (host.endsWith('.') ? host.slice(0, -1) : host).toLowerCase();
    if (name === 'localhost' || name.endsWith('.localhost')) {
      const addresses = LOOPBACK.filter((a) => family === 0 || net.isIP(a) === family);
      return { addresses, ttlMs: Number.POSITIVE_INFINITY, fromCache: false };
    }
    const invalid = invalidName(name);
    if (invalid !== undefined)
      throw dnsError(OXY_ERR.DNS_NXDOMAIN, `"${host}" is not a valid host name (${invalid})`);

    const key = `${family}/${name}`;
    const cached = this.#fromCache(key);
    if (cached !== undefined) {
      this.#events.onHit?.();
      if (cached.kind === 'negative') throw dnsError(OXY_ERR.DNS_NXDOMAIN, cached.message);
      return { addresses: cached.addresses, ttlMs: cached.expiresAt - this.#now(), fromCache: true };
    }

    let shared = this.#inflight.get(key);
    if (shared === undefined) {
      this.#events.onMiss?.();
      shared = this.#lookupAndStore(key, name, family).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, shared);
    }
    return opts.signal === undefined ? shared : abortable(shared, opts.signal);
  }

  /** Forgets every cached answer (in-flight lookups still complete and are stored). */
  clearCache(): void {
    this.#cache?.clear();
  }

  /** Number of cached entries, expired ones included until they are next looked at. */
  get cacheSize(): number {
    return this.#cache?.size ?? 0;
  }

  #fromCache(key: string): CacheEntry | undefined {
    const entry = this.#cache?.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt > this.#now()) return entry;
    this.#cache?.delete(key);
    return undefined;
  }

  async #lookupAndStore(key: string, name: string, family: 0 | 4 | 6): Promise<ResolvedAddresses> {
    const c = this.#settings.cache;
    let outcome: Outcome;
    try {
      outcome = await this.#lookup(name, family);
    } catch (e) {
      if (e instanceof OxyError && e.code === OXY_ERR.DNS_NXDOMAIN && c.negative_ttl > 0) {
        this.#cache?.set(key, {
          kind: 'negative',
          message: e.message,
          expiresAt: this.#now() + c.negative_ttl,
        });
      }
      throw e;
    }
    const ttlMs = Math.min(Math.max(outcome.ttlMs, c.min_ttl), c.max_ttl);
    if (ttlMs > 0)
      this.#cache?.set(key, { kind: 'ok', addresses: outcome.addresses, expiresAt: this.#now() + ttlMs });
    return { addresses: outcome.addresses, ttlMs, fromCache: false };
  }

  async #lookup(name: string, family: 0 | 4 | 6): Promise<Outcome> {
    const s = this.#settings;
    if (s.nameservers.length === 0) return this.#systemLookup(name, family);
    const primary = await queryServers(s.nameservers, name, family, s.timeout, s.attempts);
    if (!('kind' in primary)) return primary;
    if (primary.kind === 'negative' || s.fallback_nameservers.length === 0) throw failureError(name, primary);
    this.#events.onFallback?.();
    const fallback = await queryServers(s.fallback_nameservers, name, family, s.timeout, s.attempts);
    if (!('kind' in fallback)) return fallback;
    if (fallback.kind === 'negative') throw failureError(name, fallback);
    throw failureError(name, {
      kind: fallback.kind,
      detail: `primary: ${primary.detail}; fallback: ${fallback.detail}`,
    });
  }

  async #systemLookup(name: string, family: 0 | 4 | 6): Promise<Outcome> {
    const budget = this.#settings.timeout * this.#settings.attempts;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            failureError(name, { kind: 'timeout', detail: `system resolver gave no answer in ${budget} ms` }),
          ),
        budget,
      );
    });
    try {
      const found = await Promise.race([
        dns.promises.lookup(name, { all: true, family, order: 'verbatim' }),
        timeout,
      ]);
      const addresses = interleave(found.map((a) => a.address));
      if (addresses.length === 0) throw failureError(name, { kind: 'negative', detail: 'no address' });
      return { addresses, ttlMs: this.#settings.cache.system_ttl };
    } catch (e) {
      if (e instanceof OxyError) throw e;
      const code = (e as NodeJS.ErrnoException).code ?? 'unknown error';
      const kind = NEGATIVE_CODES.has(code) ? 'negative' : 'failed';
      throw failureError(name, { kind, detail: `system resolver: ${code}` });
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Asks one nameserver set for A and/or AAAA. A fresh c-ares channel per lookup lets the
 * deadline cancel exactly this lookup (`cancel()` stops every query on a channel); making one
 * costs about 25 µs, paid only on a cache miss.
 */
async function queryServers(
  servers: readonly string[],
  name: string,
  family: 0 | 4 | 6,
  timeoutMs: number,
  attempts: number,
): Promise<Outcome | Failure> {
  const resolver = new dns.promises.Resolver({ timeout: timeoutMs, tries: attempts, maxTimeout: timeoutMs });
  resolver.setServers([...servers]);
  // c-ares may back off beyond `timeout` on retries; this bounds the whole set's time.
  const deadline = setTimeout(() => resolver.cancel(), Math.min(MAX_TIMER_MS, timeoutMs * attempts + 50));
  try {
    const queries = [
      family !== 6 ? resolver.resolve4(name, { ttl: true }) : undefined,
      family !== 4 ? resolver.resolve6(name, { ttl: true }) : undefined,
    ].filter((q) => q !== undefined);
    const settled = await Promise.allSettled(queries);
    const found: { address: string; ttl: number }[] = [];
    const failures: Failure[] = [];
    for (const r of settled) {
      if (r.status === 'fulfilled') found.push(...r.value);
      else failures.push(classify(r.reason));
    }
    if (found.length > 0) {
      // One family answering is enough: the other may be unsupported (RFC 8305 §3).
      const ttl = Math.min(...found.map((f) => f.ttl));
      return { addresses: interleave(found.map((f) => f.address)), ttlMs: ttl * 1000 };
    }
    if (failures.every((f) => f.kind === 'negative')) {
      const nx = settled.some(
        (r) => r.status === 'rejected' && (r.reason as NodeJS.ErrnoException).code === dns.NOTFOUND,
      );
      return { kind: 'negative', detail: nx ? 'no such name' : 'no address' };
    }
    const worst = failures.find((f) => f.kind === 'failed') ?? failures.find((f) => f.kind === 'timeout');
    return worst as Failure;
  } finally {
    clearTimeout(deadline);
  }
}

function classify(reason: unknown): Failure {
  const code = (reason as NodeJS.ErrnoException).code ?? 'unknown error';
  if (NEGATIVE_CODES.has(code)) return { kind: 'negative', detail: code };
  if (code === dns.TIMEOUT || code === dns.CANCELLED) return { kind: 'timeout', detail: 'timed out' };
  const words: Record<string, string> = {
    [dns.SERVFAIL]: 'SERVFAIL',
    [dns.REFUSED]: 'REFUSED',
    [dns.CONNREFUSED]: 'connection refused',
    [dns.BADRESP]: 'malformed answer',
    [dns.FORMERR]: 'FORMERR',
  };
  return { kind: 'failed', detail: words[code] ?? code };
}

function failureError(name: string, f: Failure): OxyError {
  if (f.kind === 'negative') return dnsError(OXY_ERR.DNS_NXDOMAIN, `no address for ${name} (${f.detail})`);
  if (f.kind === 'timeout')
    return dnsError(OXY_ERR.DNS_TIMEOUT, `DNS lookup of ${name} timed out (${f.detail})`, true);
  return dnsError(OXY_ERR.DNS_FAILED, `DNS lookup of ${name} failed (${f.detail})`, true);
}

function dnsError(code: OxyErrorCode, message: string, retryable = false): OxyError {
  return new OxyError(code, message, { source: 'upstream', retryable });
}

/** Why `name` cannot be a DNS name, or undefined. Characters are not policed (underscores occur). */
function invalidName(name: string): string | undefined {
  if (name === '') return 'empty';
  if (name.length > 253) return 'longer than 253 characters';
  for (const label of name.split('.')) {
    if (label === '') return 'empty label';
    if (label.length > 63) return 'label longer than 63 characters';
  }
  if (/[\s/\\:@]/.test(name)) return 'forbidden character';
  return undefined;
}

/**
 * Orders addresses for Happy Eyeballs (RFC 8305 §4): duplicates dropped, families alternated,
 * IPv6 first, each family keeping its own order.
 */
export function interleave(addresses: readonly string[]): string[] {
  const unique = [...new Set(addresses)];
  const v6 = unique.filter((a) => net.isIPv6(a));
  const v4 = unique.filter((a) => !net.isIPv6(a));
  const out: string[] = [];
  for (let i = 0; i < Math.max(v6.length, v4.length); i++) {
    if (i < v6.length) out.push(v6[i] as string);
    if (i < v4.length) out.push(v4[i] as string);
  }
  return out;
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function abortError(signal: AbortSignal): OxyError {
  return new OxyError(OXY_ERR.ABORTED, 'DNS lookup aborted', { source: 'internal', cause: signal.reason });
}
