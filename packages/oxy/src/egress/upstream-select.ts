/**
 * `EgressHook.selectUpstream`: an app that routes to a set of upstreams names the candidates
 * (`host:port`, in order of preference) for a target, and the framework connects to the first
 * that answers, with passive health: an upstream whose connects failed
 * `egress.upstream_health.failures` times in a row is skipped for `egress.upstream_health.cooldown`.
 *
 * Ordering rules: the hook fires once per new upstream connection (not for a request on a
 * pooled one), after `handleConnection` chose `direct` and before resolution; each candidate
 * then goes through the whole direct pipeline (resolution, `handleUpstreamIps`, blocklist,
 * connect). A candidate that fails to resolve or connect counts a failure and the next one is
 * tried; a block (policy) or a hook failure is not retried. Ejected candidates are skipped
 * while another is left; when every candidate is ejected they are all tried anyway (health
 * is a preference, never a reason to refuse). A successful connect resets the count.
 */
import net from 'node:net';
import type { SocketAddr } from '../context/contexts.ts';
import type { EgressState } from '../context/state.ts';
import { isOxyError, OXY_ERR, OxyError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';

/** Errors after which the next candidate is tried (and the failed one counted). */
const RETRYABLE: ReadonlySet<string> = new Set([
  OXY_ERR.CONNECT_REFUSED,
  OXY_ERR.CONNECT_TIMEOUT,
  OXY_ERR.CONNECT_FAILED,
  OXY_ERR.UNREACHABLE,
  OXY_ERR.DNS_NXDOMAIN,
  OXY_ERR.DNS_TIMEOUT,
  OXY_ERR.DNS_FAILED,
  OXY_ERR.DNS_MALFORMED,
]);

/** Upstreams tracked at most: the oldest entry goes first (names from clients must not grow it for ever). */
const MAX_TRACKED = 4096;

interface Health {
  failures: number;
  /** `performance.now()` until which the upstream is skipped; 0 when it is not ejected. */
  ejectedUntil: number;
}

/** Consecutive connect failures per upstream (`host:port`), and the ejections they caused. */
export class UpstreamHealth {
  readonly #byUpstream = new Map<string, Health>();
  readonly #failures: number;
  readonly #cooldownMs: number;

  constructor(failures: number, cooldownMs: number) {
    this.#failures = failures;
    this.#cooldownMs = cooldownMs;
  }

  /** True while `upstream` is ejected. */
  ejected(upstream: string, now = performance.now()): boolean {
    const h = this.#byUpstream.get(upstream);
    return h !== undefined && h.ejectedUntil > now;
  }

  /** Counts a failed connect; the `failures`-th in a row ejects the upstream for the cooldown. */
  failed(upstream: string, now = performance.now()): void {
    let h = this.#byUpstream.get(upstream);
    if (h === undefined) {
      if (this.#byUpstream.size >= MAX_TRACKED) {
        const oldest = this.#byUpstream.keys().next().value;
        if (oldest !== undefined) this.#byUpstream.delete(oldest);
      }
      h = { failures: 0, ejectedUntil: 0 };
      this.#byUpstream.set(upstream, h);
    }
    h.failures++;
    if (h.failures >= this.#failures) {
      h.ejectedUntil = now + this.#cooldownMs;
      h.failures = 0;
    }
  }

  /** A connect succeeded: the count starts again. */
  succeeded(upstream: string): void {
    this.#byUpstream.delete(upstream);
  }
}

/** Parses a candidate `host:port` (`[v6]:port` for IPv6); throws a typed error for anything else. */
export function parseCandidate(text: string): SocketAddr {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? 0 : Number(m[3]);
  const host = m === null ? '' : (m[1] ?? m[2] ?? '');
  if (m === null || port < 1 || port > 65535 || (m[1] !== undefined && net.isIPv6(host) === false)) {
    throw new OxyError(
      OXY_ERR.INVALID_DECISION,
      `selectUpstream returned ${JSON.stringify(text)}, not host:port`,
      {
        source: 'internal',
      },
    );
  }
  return { host, port };
}

/**
 * Asks `selectUpstream` for the candidates for `addr`: their addresses in order, or null when
 * the app does not select for it (the hook is absent or answered `undefined`).
 */
export async function selectCandidates(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
): Promise<SocketAddr[] | null> {
  const hook = rt.hooks.selectUpstream;
  if (hook === null) return null;
  let list: readonly string[] | undefined;
  try {
    list = await hook(addr, eg);
  } catch (e) {
    throw rt.hookFailed('EgressHook.selectUpstream', e);
  }
  if (list === undefined) return null;
  try {
    return list.map(parseCandidate);
  } catch (e) {
    throw rt.hookFailed('EgressHook.selectUpstream', e);
  }
}

/**
 * Connects to the first candidate that answers with `connectOne`, skipping ejected ones while
 * another is left, counting failures and successes in `health`.
 */
export async function connectFirst<T>(
  health: UpstreamHealth,
  candidates: readonly SocketAddr[],
  connectOne: (addr: SocketAddr) => Promise<T>,
): Promise<T> {
  if (candidates.length === 0) {
    throw new OxyError(OXY_ERR.EGRESS_BLOCKED, 'selectUpstream named no upstream', { source: 'internal' });
  }
  const key = (a: SocketAddr): string =>
    a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  const now = performance.now();
  const healthy = candidates.filter((c) => !health.ejected(key(c), now));
  let last: unknown;
  for (const c of healthy.length > 0 ? healthy : candidates) {
    try {
      const connected = await connectOne(c);
      health.succeeded(key(c));
      return connected;
    } catch (e) {
      if (!isOxyError(e) || !RETRYABLE.has(e.code)) throw e;
      health.failed(key(c));
      last = e;
    }
  }
  throw last;
}
