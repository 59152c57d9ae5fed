/**
 * Header and target handling shared by every HTTP on-ramp: parsing the request target
 * (authority-form for CONNECT, absolute-form for forwarding) and removing hop-by-hop fields
 * (RFC 9110 §7.6.1) before a message crosses the proxy. `Proxy-Authorization` is always
 * removed: credentials for this proxy must never reach the next hop.
 *
 * The raw-header filters run on every forwarded message, so they compare names by length
 * first and lower-case only the few candidates, allocating nothing for ordinary fields.
 */
import net from 'node:net';
import type { SocketAddr } from '../../context/contexts.ts';
import type { HttpHeaders } from '../../hooks/http-request.ts';

/** Hop-by-hop fields removed from requests and responses, besides those `Connection` names. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
]);
const HOP_LENGTHS = new Set([...HOP_BY_HOP].map((n) => n.length));

/** The field names a `Connection` header lists (lower-case), or null when there is none. */
function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  let tokens: Set<string> | null = null;
  for (const v of Array.isArray(value) ? value : [value]) tokens = addConnectionTokens(v, tokens);
  return tokens;
}

/**
 * Adds the field names one `Connection` value lists to `tokens` (made when the first one is
 * found) and returns it. The usual values (`keep-alive`, `close`) list none and allocate nothing.
 */
function addConnectionTokens(value: string, tokens: Set<string> | null): Set<string> | null {
  if (!value.includes(',')) {
    const name = value.trim().toLowerCase();
    if (name === '' || name === 'close' || name === 'keep-alive') return tokens;
    tokens ??= new Set();
    tokens.add(name);
    return tokens;
  }
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase();
    if (name !== '' && name !== 'close' && name !== 'keep-alive') {
      tokens ??= new Set();
      tokens.add(name);
    }
  }
  return tokens;
}

function rawConnectionTokens(raw: readonly string[]): Set<string> | null {
  let tokens: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 10 && name.toLowerCase() === 'connection')
      tokens = addConnectionTokens(raw[i + 1] as string, tokens);
  }
  return tokens;
}

/** True when field `name` crosses the proxy (see {@link filterRawHeaders} for the arguments). */
function crosses(name: string, skip: string, listed: Set<string> | null, keepUpgrade: boolean): boolean {
  const len = name.length;
  if (!HOP_LENGTHS.has(len) && len !== skip.length && listed === null) return true;
  const lower = name.toLowerCase();
  if (lower === skip) return false;
  if (HOP_BY_HOP.has(lower) && !(keepUpgrade && (lower === 'upgrade' || lower === 'connection')))
    return false;
  return !(listed?.has(lower) && !(keepUpgrade && lower === 'upgrade'));
}

/**
 * Copies raw headers (`[name, value, name, value, …]`) without hop-by-hop fields and without
 * `skip` (a lower-case name such as `host`, or ''). `keepUpgrade` keeps `Upgrade` and
 * `Connection: upgrade` for a protocol switch.
 */
export function filterRawHeaders(raw: readonly string[], skip: string, keepUpgrade = false): string[] {
  const listed = rawConnectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (crosses(name, skip, listed, keepUpgrade)) out.push(name, raw[i + 1] as string);
  }
  return out;
}

/**
 * The header lines (`Name: value\r\n` each) of the fields of `raw` that cross the proxy, as
 * {@link filterRawHeaders} keeps them, in one string: the lean path writes heads without an
 * intermediate array.
 */
export function serializeRawHeaders(raw: readonly string[], skip: string): string {
  const listed = rawConnectionTokens(raw);
  let out = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (crosses(name, skip, listed, false)) out += `${name}: ${raw[i + 1]}\r\n`;
  }
  return out;
}

/**
 * True when `raw` has a `Content-Length` field that crosses the proxy: when the lines
 * {@link serializeRawHeaders} makes of `raw` (with no `skip`) state a length. A scan of the
 * names, without searching the serialised text.
 */
export function keepsContentLength(raw: readonly string[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 14 && name.toLowerCase() === 'content-length')
      return crosses(name, '', rawConnectionTokens(raw), false);
  }
  return false;
}

/** Removes hop-by-hop fields from a header object (lower-case names), in place. */
export function stripHopByHop(headers: HttpHeaders, keepUpgrade = false): void {
  const listed = connectionTokens(headers.connection);
  if (listed !== null)
    for (const name of listed) if (!(keepUpgrade && name === 'upgrade')) delete headers[name];
  for (const name of HOP_BY_HOP) {
    if (keepUpgrade && (name === 'upgrade' || name === 'connection')) continue;
    if (name in headers) delete headers[name];
  }
}

/** Converts a header object to raw form, skipping undefined values. */
export function toRawHeaders(headers: HttpHeaders): string[] {
  const out: string[] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else out.push(name, v);
  }
  return out;
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/**
 * Parses `host:port` (`[v6]:port`); with `defaultPort`, the port may be omitted. Returns null
 * for anything else: user info, an empty host, a bad or missing port, a bad IPv6 literal.
 */
export function parseAuthority(text: string, defaultPort?: number): SocketAddr | null {
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return null;
    host = text.slice(1, close);
    if (net.isIPv6(host) === false) return null;
    const rest = text.slice(close + 1);
    if (rest === '') portText = undefined;
    else if (rest.startsWith(':')) portText = rest.slice(1);
    else return null;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    } else {
      host = text;
    }
    if (host === '' || host.includes(':') || /[\s@/\\?#%]/.test(host)) return null;
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) return null;
    port = Number(portText);
    if (port < 1 || port > 65535) return null;
  }
  return { host: host.toLowerCase(), port };
}

/** An absolute-form request target, split. */
export interface AbsoluteTarget {
  readonly scheme: string;
  /** `host[:port]` as written. */
  readonly authority: string;
  readonly addr: SocketAddr;
  /** Path and query, at least `/`. */
  readonly path: string;
  /**
   * For an `https` target whose certificate names another host than `addr` (an intercepted
   * tunnel to an IP literal whose client sent an SNI): the name to verify. Default `addr.host`.
   */
  readonly serverName?: string;
}

/** Parses an absolute-form target (`http://host:port/path?q`), or null if it is not one. */
export function parseAbsoluteTarget(url: string): AbsoluteTarget | null {
  const sep = url.indexOf('://');
  if (sep <= 0) return null;
  const scheme = url.slice(0, sep).toLowerCase();
  const defaultPort = DEFAULT_PORTS[scheme];
  if (defaultPort === undefined) return null;
  const start = sep + 3;
  let end = start;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break;
    end++;
  }
  const authority = url.slice(start, end);
  const addr = parseAuthority(authority, defaultPort);
  if (addr === null) return null;
  let path = url.slice(end);
  const hash = path.indexOf('#');
  if (hash >= 0) path = path.slice(0, hash);
  if (path === '') path = '/';
  else if (path.charCodeAt(0) === 63) path = `/${path}`;
  return { scheme, authority, addr, path };
}

/** Fields `node:http` keeps the first of when repeated (its `matchKnownFields`). */
const SINGLE_VALUED = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

/**
 * Raw headers (`[name, value, …]`) as the header object `node:http` would build: lower-case
 * names; a repeated field joined with `, ` (`; ` for `cookie`), kept as an array for
 * `set-cookie`, or its first value kept for the single-valued fields.
 */
export function rawToHeaders(raw: readonly string[]): HttpHeaders {
  const out: HttpHeaders = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    const prev = out[name];
    if (prev === undefined) out[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(prev)) prev.push(value);
    else if (!SINGLE_VALUED.has(name)) out[name] = `${prev}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return out;
}
