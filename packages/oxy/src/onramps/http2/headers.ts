/**
 * HTTP/2 header rules at the proxy boundary (RFC 9113 §8): reading a request's pseudo-header
 * fields into the version-neutral `RequestHead` the pipeline uses, validating a CONNECT
 * authority (§8.5), and removing connection-specific fields (§8.2.2) that must never cross
 * between HTTP/1.1 and HTTP/2 (Node refuses to send them on HTTP/2 at all).
 *
 * Everything here is pure, so malformed input is tested without sockets.
 */
import type { IncomingHttpHeaders } from 'node:http2';
import type { HttpHeaders, RequestHead } from '../../hooks/http-request.ts';

/** Connection-specific fields (RFC 9113 §8.2.2, RFC 9110 §7.6.1): dropped in both directions. */
const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'te',
  'http2-settings',
]);

/** What an HTTP/2 request stream asks for, after its pseudo-header fields were checked. */
export type Http2RequestShape =
  /** Plain CONNECT (RFC 9113 §8.5): a TCP tunnel to `host:port`. */
  | { readonly kind: 'connect'; readonly head: RequestHead; readonly host: string; readonly port: number }
  /** Extended CONNECT (RFC 8441): `:protocol` names what runs over the stream (MASQUE later). */
  | { readonly kind: 'extended-connect'; readonly head: RequestHead; readonly protocol: string }
  /** Any other method: a request forwarded to `:authority`. */
  | { readonly kind: 'request'; readonly head: RequestHead }
  /** Malformed: answer `status` with `reason` and reset nothing else. */
  | { readonly kind: 'invalid'; readonly status: number; readonly reason: string };

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

const HOST_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;
const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

/**
 * Parses a CONNECT authority, `host:port` or `[v6]:port` (RFC 9113 §8.5: no userinfo, a port is
 * required). Returns the host (IPv6 without brackets, names lower-cased) and the port, or a
 * reason the authority is malformed.
 */
export function parseConnectAuthority(
  authority: string,
): { readonly host: string; readonly port: number } | { readonly error: string } {
  if (authority.length === 0 || authority.length > 261) return { error: 'authority is empty or too long' };
  let host: string;
  let portText: string;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0 || authority[close + 1] !== ':') return { error: 'expected "[v6]:port"' };
    host = authority.slice(1, close);
    portText = authority.slice(close + 2);
    if (!IPV6.test(host) || !host.includes(':')) return { error: 'invalid IPv6 address' };
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon <= 0) return { error: 'expected "host:port"' };
    host = authority.slice(0, colon);
    portText = authority.slice(colon + 1);
    if (host.includes(':')) return { error: 'an IPv6 address needs brackets' };
    if (!IPV4.test(host) && !HOST_NAME.test(host)) return { error: 'invalid host name' };
    host = host.toLowerCase();
  }
  if (!/^\d{1,5}$/.test(portText)) return { error: 'port must be a number' };
  const port = Number(portText);
  if (port < 1 || port > 65535) return { error: 'port must be 1 to 65535' };
  return { host, port };
}

/**
 * The regular header fields of an incoming HTTP/2 request: pseudo-header fields and
 * connection-specific fields removed, names already lower-case (HTTP/2 requires it).
 */
export function regularHeaders(headers: IncomingHttpHeaders): HttpHeaders {
  const out: HttpHeaders = {};
  for (const name of Object.keys(headers)) {
    if (name.charCodeAt(0) === 58 /* ':' */ || CONNECTION_SPECIFIC.has(name)) continue;
    out[name] = headers[name];
  }
  return out;
}

/**
 * Classifies an HTTP/2 request by its pseudo-header fields and builds its `RequestHead`.
 * nghttp2 has already reset streams whose pseudo-header fields break the basic rules
 * (RFC 9113 §8.3); this checks what it leaves to the application: the CONNECT authority,
 * and that a forwarded request names an authority and an http(s) scheme.
 */
export function classifyRequest(headers: IncomingHttpHeaders): Http2RequestShape {
  const method = first(headers[':method']) ?? '';
  const authority = first(headers[':authority']) ?? first(headers.host) ?? '';
  const protocol = first(headers[':protocol']);
  const scheme = first(headers[':scheme']) ?? '';
  const path = first(headers[':path']) ?? '';
  const head: RequestHead = { method, scheme, authority, path, headers: regularHeaders(headers) };
  if (method === 'CONNECT' && protocol === undefined) {
    if (scheme !== '' || path !== '') {
      return { kind: 'invalid', status: 400, reason: 'CONNECT must not carry :scheme or :path' };
    }
    const target = parseConnectAuthority(authority);
    if ('error' in target) return { kind: 'invalid', status: 400, reason: `bad :authority: ${target.error}` };
    return { kind: 'connect', head, host: target.host, port: target.port };
  }
  if (method === 'CONNECT') return { kind: 'extended-connect', head, protocol: protocol as string };
  if (authority === '') return { kind: 'invalid', status: 400, reason: 'missing :authority' };
  if (scheme !== 'http' && scheme !== 'https') {
    return { kind: 'invalid', status: 400, reason: `unsupported :scheme "${scheme}"` };
  }
  if (path === '' || (path[0] !== '/' && !(method === 'OPTIONS' && path === '*'))) {
    return { kind: 'invalid', status: 400, reason: 'bad :path' };
  }
  return { kind: 'request', head };
}

/**
 * Response header fields made safe for HTTP/2: connection-specific fields and those the
 * `Connection` field names are dropped, names lower-cased, pseudo-header fields dropped (the
 * status is passed separately). Returns a fresh object.
 */
export function http2ResponseHeaders(headers: HttpHeaders): Record<string, string | string[]> {
  // Names are lower-case by contract, but a hook may have added one in another case.
  const named = new Set<string>();
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.toLowerCase() !== 'connection') continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      for (const token of v.split(',')) named.add(token.trim().toLowerCase());
    }
  }
  const out: Record<string, string | string[]> = {};
  for (const [rawName, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    if (name.charCodeAt(0) === 58 || CONNECTION_SPECIFIC.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}
