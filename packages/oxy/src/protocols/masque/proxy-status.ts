/**
 * The two Structured Fields (RFC 8941) MASQUE needs: `Capsule-Protocol` (RFC 9297 §3.4, an
 * Item that must be a Boolean) and `Proxy-Status` (RFC 9209, a List of proxy names with
 * parameters). Only what these two use is parsed: tokens, strings, integers, booleans and
 * parameters; a value outside that reads as absent, never as an exception.
 */

/** Proxy error types of RFC 9209 §2.3 that MASQUE answers use. */
export type ProxyErrorType =
  | 'dns_timeout'
  | 'dns_error'
  | 'destination_not_found'
  | 'destination_unavailable'
  | 'destination_ip_prohibited'
  | 'destination_ip_unroutable'
  | 'connection_refused'
  | 'connection_terminated'
  | 'connection_timeout'
  | 'connection_limit_reached'
  | 'http_request_error'
  | 'http_request_denied'
  | 'proxy_internal_error'
  | 'proxy_configuration_error';

/** A bare item of the kinds handled here. */
export type BareItem = string | number | boolean | { readonly token: string };

/** One member of a parsed `Proxy-Status` list. */
export interface ProxyStatusEntry {
  /** The proxy's name (a token or a string). */
  readonly proxy: string;
  readonly params: Readonly<Record<string, BareItem>>;
  /** `params.error` when it is a token: the RFC 9209 error type. */
  readonly error: string | undefined;
  /** `params.details` when it is a string. */
  readonly details: string | undefined;
}

class Cursor {
  at = 0;
  readonly s: string;
  constructor(s: string) {
    this.s = s;
  }
  peek(): string {
    return this.s[this.at] ?? '';
  }
  skipSp(): void {
    while (this.s[this.at] === ' ') this.at++;
  }
  skipOws(): void {
    while (this.s[this.at] === ' ' || this.s[this.at] === '\t') this.at++;
  }
  done(): boolean {
    return this.at >= this.s.length;
  }
}

const TOKEN_START = /[A-Za-z*]/;
const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/;
const KEY_START = /[a-z*]/;
const KEY_CHAR = /[a-z0-9_\-.*]/;

function parseKey(c: Cursor): string | undefined {
  if (!KEY_START.test(c.peek())) return undefined;
  const start = c.at;
  while (!c.done() && KEY_CHAR.test(c.peek())) c.at++;
  return c.s.slice(start, c.at);
}

function parseBareItem(c: Cursor): BareItem | undefined {
  const ch = c.peek();
  if (ch === '"') {
    let out = '';
    c.at++;
    while (!c.done()) {
      const x = c.s[c.at++]!;
      if (x === '\\') {
        const y = c.s[c.at++];
        if (y !== '"' && y !== '\\') return undefined;
        out += y;
      } else if (x === '"') return out;
      else if (x < ' ' || x > '~') return undefined;
      else out += x;
    }
    return undefined;
  }
  if (ch === '?') {
    const v = c.s[c.at + 1];
    if (v !== '0' && v !== '1') return undefined;
    c.at += 2;
    return v === '1';
  }
  if (ch === '-' || (ch >= '0' && ch <= '9')) {
    const m = /^-?\d{1,15}(?:\.\d{1,3})?/.exec(c.s.slice(c.at));
    if (m === null) return undefined;
    c.at += m[0].length;
    return Number(m[0]);
  }
  if (TOKEN_START.test(ch)) {
    const start = c.at;
    while (!c.done() && TOKEN_CHAR.test(c.peek())) c.at++;
    return { token: c.s.slice(start, c.at) };
  }
  return undefined;
}

function parseParams(c: Cursor): Record<string, BareItem> | undefined {
  const params: Record<string, BareItem> = {};
  while (c.peek() === ';') {
    c.at++;
    c.skipSp();
    const key = parseKey(c);
    if (key === undefined) return undefined;
    let value: BareItem = true;
    if (c.peek() === '=') {
      c.at++;
      const v = parseBareItem(c);
      if (v === undefined) return undefined;
      value = v;
    }
    params[key] = value;
  }
  return params;
}

function joinField(value: string | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === 'string' ? value : value.join(', ');
}

/**
 * True when a `Capsule-Protocol` field value is the Boolean true (`?1`, parameters ignored).
 * Absent, false, repeated (a List, not an Item) or unparsable all mean false (RFC 9297 §3.4).
 */
export function parseCapsuleProtocol(value: string | readonly string[] | undefined): boolean {
  if (value === undefined || (typeof value !== 'string' && value.length !== 1)) return false;
  const c = new Cursor(joinField(value)!.trim());
  const item = parseBareItem(c);
  if (item !== true || parseParams(c) === undefined) return false;
  return c.done();
}

/** Parses a `Proxy-Status` field; `[]` when absent or unparsable. */
export function parseProxyStatus(value: string | readonly string[] | undefined): ProxyStatusEntry[] {
  const s = joinField(value);
  if (s === undefined) return [];
  const c = new Cursor(s.trim());
  const out: ProxyStatusEntry[] = [];
  while (!c.done()) {
    const name = parseBareItem(c);
    if (typeof name !== 'string' && (typeof name !== 'object' || name === null)) return [];
    const params = parseParams(c);
    if (params === undefined) return [];
    const error = params['error'];
    const details = params['details'];
    out.push({
      proxy: typeof name === 'string' ? name : name.token,
      params,
      error: typeof error === 'object' ? error.token : undefined,
      details: typeof details === 'string' ? details : undefined,
    });
    c.skipOws();
    if (c.done()) break;
    if (c.peek() !== ',') return [];
    c.at++;
    c.skipOws();
  }
  return out;
}

/** Serializes `s` as an sf-string, dropping characters SF strings cannot carry. */
export function sfString(s: string): string {
  return `"${s.replace(/[^\x20-\x7e]/g, '?').replace(/[\\"]/g, (x) => `\\${x}`)}"`;
}

/** The fields of one `Proxy-Status` member. */
export interface ProxyStatusInit {
  /** The proxy's name; a token when it is one (`oxy`), else a string. */
  readonly proxy: string;
  readonly error: ProxyErrorType;
  readonly details?: string;
  /** The DNS rcode for `dns_error` (e.g. `NXDOMAIN`). */
  readonly rcode?: string;
  /** Where the proxy tried to go (`host:port`). */
  readonly nextHop?: string;
}

/** Formats one `Proxy-Status` member: `oxy; error=dns_error; rcode="NXDOMAIN"; details="..."`. */
export function formatProxyStatus(init: ProxyStatusInit): string {
  const name = /^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/.test(init.proxy)
    ? init.proxy
    : sfString(init.proxy);
  let out = `${name}; error=${init.error}`;
  if (init.nextHop !== undefined) out += `; next-hop=${sfString(init.nextHop)}`;
  if (init.rcode !== undefined) out += `; rcode=${sfString(init.rcode)}`;
  if (init.details !== undefined) out += `; details=${sfString(init.details)}`;
  return out;
}
