/**
 * `interception.hosts`: which tunnels the default app intercepts, by the name the client asked
 * for (SNI, or the CONNECT host without one). Patterns are exact names, IP literals, and
 * `*.example.com`, which matches any name under example.com (at any depth) but not
 * example.com itself. Matching is case-insensitive and ignores a trailing dot. An empty list
 * matches everything.
 *
 * Ordering rule: patterns are compiled once, at start-up; a malformed one is a start-up error
 * naming `interception.hosts[i]`, never a pattern that silently matches nothing.
 */
import { OXY_ERR, OxyError } from '../../errors.ts';
import { validServerName } from './client-hello.ts';
import { canonicalIp } from './leaf.ts';

/** A compiled `interception.hosts` list. */
export interface HostMatcher {
  /** True when the list is empty: every host matches. */
  readonly all: boolean;
  /** Whether `host` (a name or IP literal, any case, maybe with a trailing dot or brackets) matches. */
  matches(host: string): boolean;
}

function normalName(host: string): string {
  const lower = host.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Compiles `patterns`. Throws `OXY_ERR_INVALID_APP` naming `${where}[i]` for a pattern that is
 * neither a valid name, an IP literal nor `*.` followed by a valid name.
 */
export function compileHostPatterns(patterns: readonly string[], where = 'interception.hosts'): HostMatcher {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  patterns.forEach((pattern, i) => {
    const ip = canonicalIp(pattern);
    if (ip !== null) {
      exact.add(ip);
      return;
    }
    const wildcard = pattern.startsWith('*.');
    const name = validServerName(normalName(wildcard ? pattern.slice(2) : pattern));
    if (name === null) {
      throw new OxyError(
        OXY_ERR.INVALID_APP,
        `${where}[${i}]: ${JSON.stringify(pattern)} is not a host name, an IP literal or *.domain`,
      );
    }
    if (wildcard) suffixes.push(`.${name}`);
    else exact.add(name);
  });
  const all = patterns.length === 0;
  return {
    all,
    matches(host: string): boolean {
      if (all) return true;
      const ip = canonicalIp(host);
      if (ip !== null) return exact.has(ip);
      const name = normalName(host);
      if (exact.has(name)) return true;
      for (const suffix of suffixes) if (name.length > suffix.length && name.endsWith(suffix)) return true;
      return false;
    },
  };
}
