/**
 * URI templates for CONNECT-UDP and CONNECT-IP (RFC 9298 §2, RFC 9484 §3): the subset of
 * RFC 6570 those RFCs allow, parsed once, then matched against request targets (the proxy) or
 * expanded into them (the client).
 *
 * Allowed: literal text of printable ASCII, simple expressions (`{target_host}`,
 * `{target_host,target_port}`) and form-style query expressions (`{?h,p}`, `{&p}`). Refused,
 * as the RFCs require: the `+`, `#`, `.`, `/` and `;` operators, level-4 modifiers (`:3`, `*`),
 * variables outside the path and query, and a CONNECT-UDP template without both
 * `target_host` and `target_port`.
 *
 * Matching is by parts: the path is matched in order, the query by parameter name (in any
 * order, extra parameters ignored). Values are percent-decoded after matching, so an IPv6
 * literal arrives as `2001%3Adb8%3A%3A42` and leaves as `2001:db8::42`. A template may be a
 * bare path (the proxy's settings: `/.well-known/masque/udp/{target_host}/{target_port}/`) or
 * an absolute URI (a client's configuration); only the path and query take part in matching.
 */

import { OXY_ERR, OxyError } from '../../errors.ts';

/** The two MASQUE upgrade tokens. */
export type MasqueProtocol = 'connect-udp' | 'connect-ip';

/** The default templates (RFC 9298 §2, RFC 9484 §3), as paths. */
export const DEFAULT_TEMPLATES = {
  'connect-udp': '/.well-known/masque/udp/{target_host}/{target_port}/',
  'connect-ip': '/.well-known/masque/ip/{target}/{ipproto}/',
} as const satisfies Record<MasqueProtocol, string>;

type Part =
  | { readonly kind: 'literal'; readonly text: string }
  | { readonly kind: 'simple' | 'query' | 'continuation'; readonly names: readonly string[] };

/** A parsed template. Build with {@link parseUriTemplate}. */
export interface UriTemplate {
  readonly source: string;
  readonly protocol: MasqueProtocol;
  /** `https://host:port` of an absolute template, `undefined` for a bare path. */
  readonly origin: string | undefined;
  /** Every variable named in the template. */
  readonly variables: readonly string[];
  /** The path and query parts, in order. */
  readonly parts: readonly Part[];
}

/** The variables a match found, percent-decoded; absent form-style ones are left out. */
export type TemplateVariables = Record<string, string>;

function templateError(template: string, why: string): OxyError {
  return new OxyError(OXY_ERR.MASQUE_TEMPLATE, `URI template ${JSON.stringify(template)}: ${why}`);
}

const VARNAME = /^(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*$/;

/**
 * Parses and validates `template` for `protocol`. Throws `OXY_ERR_MASQUE_TEMPLATE` naming the
 * rule broken; the proxy calls it at start-up and the client before sending anything.
 */
export function parseUriTemplate(template: string, protocol: MasqueProtocol): UriTemplate {
  for (let i = 0; i < template.length; i++) {
    const c = template.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) throw templateError(template, 'only printable ASCII (0x21-0x7E) is allowed');
  }
  let origin: string | undefined;
  let rest = template;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#{}]+)(?=\/)/.exec(template);
  if (scheme !== null) {
    origin = `${scheme[1]!.toLowerCase()}://${scheme[2]}`;
    rest = template.slice(scheme[0].length);
  } else if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(template)) {
    throw templateError(
      template,
      'an absolute template needs a non-empty authority and a path starting with "/"',
    );
  }
  if (!rest.startsWith('/')) throw templateError(template, 'the path must start with "/"');
  const parts: Part[] = [];
  const variables: string[] = [];
  let inQuery = false;
  let at = 0;
  while (at < rest.length) {
    const open = rest.indexOf('{', at);
    const literalEnd = open < 0 ? rest.length : open;
    if (literalEnd > at) {
      const text = rest.slice(at, literalEnd);
      if (text.includes('}')) throw templateError(template, 'unbalanced "}"');
      if (text.includes('#')) throw templateError(template, 'a fragment is not allowed');
      if (text.includes('?')) inQuery = true;
      parts.push({ kind: 'literal', text });
    }
    if (open < 0) break;
    const close = rest.indexOf('}', open);
    if (close < 0) throw templateError(template, 'unterminated expression');
    let body = rest.slice(open + 1, close);
    let kind: 'simple' | 'query' | 'continuation' = 'simple';
    const op = body[0];
    if (op === '?' || op === '&') {
      kind = op === '?' ? 'query' : 'continuation';
      body = body.slice(1);
      if (op === '?' && inQuery) throw templateError(template, '"{?...}" after the query has started');
      inQuery = true;
    } else if (op !== undefined && '+#./;=,!@|'.includes(op)) {
      throw templateError(template, `the "${op}" operator is not allowed`);
    }
    const names = body.split(',');
    for (const name of names) {
      if (name.endsWith('*') || /:\d+$/.test(name)) {
        throw templateError(template, `modifier on "${name}": templates are level 3 at most`);
      }
      if (!VARNAME.test(name)) throw templateError(template, `bad variable name ${JSON.stringify(name)}`);
      if (variables.includes(name)) throw templateError(template, `variable "${name}" appears twice`);
      variables.push(name);
    }
    parts.push({ kind, names });
    at = close + 1;
  }
  if (protocol === 'connect-udp') {
    for (const v of ['target_host', 'target_port']) {
      if (!variables.includes(v)) throw templateError(template, `a connect-udp template must contain {${v}}`);
    }
  }
  return { source: template, protocol, origin, variables, parts };
}

const UNRESERVED = /[^A-Za-z0-9\-._~]/g;

function encodeValue(value: string): string {
  // RFC 9484's examples keep the wildcard bare (`/ip/*/*/`); RFC 6570 would give `%2A`. Both
  // decode to `*`; the bare form is what deployed proxies match on.
  if (value === '*') return '*';
  return Buffer.from(value, 'utf8')
    .toString('latin1')
    .replace(UNRESERVED, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/**
 * Expands `t` with `vars` (raw values; this function percent-encodes them) into a path and
 * query. Variables left undefined are omitted, as RFC 6570 says.
 */
export function expandUriTemplate(
  t: UriTemplate,
  vars: Readonly<Record<string, string | undefined>>,
): string {
  let out = '';
  for (const p of t.parts) {
    if (p.kind === 'literal') {
      out += p.text;
      continue;
    }
    const defined = p.names.filter((n) => vars[n] !== undefined);
    if (p.kind === 'simple') {
      out += defined.map((n) => encodeValue(vars[n]!)).join(',');
    } else if (defined.length > 0) {
      out += (p.kind === 'query' ? '?' : '&') + defined.map((n) => `${n}=${encodeValue(vars[n]!)}`).join('&');
    }
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function decode(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    // A malformed escape (`%zz`) is a value that matches nothing: the request is malformed.
    return undefined;
  }
}

/**
 * Matches a request's path and query (`/a/b?c=d`, as in `:path` or the request-target) against
 * `t`. Returns the decoded variables, or `undefined` when the target does not fit the template
 * (the proxy answers 400). Validating the values is the caller's job (`targets.ts`).
 */
export function matchUriTemplate(t: UriTemplate, pathAndQuery: string): TemplateVariables | undefined {
  const vars: TemplateVariables = {};
  // Path parts run up to the first literal "?" or form-style expression.
  let pathRegex = '^';
  const pathNames: string[] = [];
  let i = 0;
  let queryLiteral = '';
  for (; i < t.parts.length; i++) {
    const p = t.parts[i]!;
    if (p.kind === 'literal') {
      const q = p.text.indexOf('?');
      if (q >= 0) {
        pathRegex += escapeRegExp(p.text.slice(0, q));
        queryLiteral = p.text.slice(q + 1);
        i++;
        break;
      }
      pathRegex += escapeRegExp(p.text);
    } else if (p.kind === 'simple') {
      pathRegex += p.names.map(() => '([^/?#,]*)').join(',');
      pathNames.push(...p.names);
    } else break;
  }
  const hashAt = pathAndQuery.indexOf('#');
  const target = hashAt >= 0 ? pathAndQuery.slice(0, hashAt) : pathAndQuery;
  const qAt = target.indexOf('?');
  const path = qAt >= 0 ? target.slice(0, qAt) : target;
  const query = qAt >= 0 ? target.slice(qAt + 1) : '';
  const m = new RegExp(`${pathRegex}$`).exec(path);
  if (m === null) return undefined;
  for (let k = 0; k < pathNames.length; k++) {
    const v = decode(m[k + 1]!);
    if (v === undefined) return undefined;
    vars[pathNames[k]!] = v;
  }
  // Query: rebuild the template's query with a `{n}` marker per variable (braces cannot occur
  // in a template's literal text), then match it pair by pair.
  const params = new Map<string, string>();
  for (const pair of query === '' ? [] : query.split('&')) {
    const eq = pair.indexOf('=');
    const key = decode(eq >= 0 ? pair.slice(0, eq) : pair);
    if (key !== undefined && !params.has(key)) params.set(key, eq >= 0 ? pair.slice(eq + 1) : '');
  }
  let templateQuery = queryLiteral;
  const markerNames: string[] = [];
  const optional = new Set<string>();
  for (; i < t.parts.length; i++) {
    const p = t.parts[i]!;
    if (p.kind === 'literal') templateQuery += p.text;
    else if (p.kind === 'simple') {
      templateQuery += p.names.map((n) => `{${markerNames.push(n) - 1}}`).join(',');
    } else {
      for (const n of p.names) {
        optional.add(n);
        templateQuery += `&${n}={${markerNames.push(n) - 1}}`;
      }
    }
  }
  for (const pair of templateQuery.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = eq >= 0 ? pair.slice(0, eq) : pair;
    const pattern = eq >= 0 ? pair.slice(eq + 1) : '';
    const markers = [...pattern.matchAll(/\{(\d+)\}/g)].map((x) => markerNames[Number(x[1])]!);
    const got = params.get(key);
    if (got === undefined) {
      if (markers.length > 0 && markers.every((n) => optional.has(n))) continue;
      return undefined;
    }
    const re = new RegExp(
      `^${pattern
        .split(/\{\d+\}/)
        .map(escapeRegExp)
        .join('([^&,]*)')}$`,
    );
    const pm = re.exec(got);
    if (pm === null) return undefined;
    for (let k = 0; k < markers.length; k++) {
      const v = decode(pm[k + 1]!);
      if (v === undefined) return undefined;
      vars[markers[k]!] = v;
    }
  }
  return vars;
}
