/**
 * The HTTP/2 form of a request the exchange serialised for HTTP/1.1: the HTTP/2 upstream
 * (`session-pool.ts`) takes the very head text the HTTP/1.1 pool takes, so the exchange
 * (`flows/http/exchange.ts`) builds one head whichever protocol the origin chose. Pure
 * functions; the head was built by the proxy, so it is well formed by construction.
 *
 * Rules (RFC 9113 §8.2.2, §8.3.1): connection-specific fields (`Connection`, the fields it
 * names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `TE`,
 * `HTTP2-Settings`) are removed; `Host` becomes `:authority`; `te: trailers` (the only `TE`
 * allowed) is sent, since the proxy relays trailers; names are lower-cased; several `Cookie`
 * lines are joined with `; ` (§8.2.3), other repeated fields are kept as repeated fields.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

/** Fields that HTTP/2 forbids (RFC 9113 §8.2.2), besides those `Connection` names. */
const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'http2-settings',
  'host',
]);

/** A request's HTTP/2 header block, pseudo-fields first. */
export interface Http2RequestHead {
  readonly method: string;
  readonly headers: OutgoingHttpHeaders;
}

/**
 * The HTTP/2 header block of `head` (`METHOD target HTTP/1.1\r\n` then `Name: value\r\n`
 * lines and an empty line), sent to an `https` origin. An absolute-form target keeps its path.
 */
export function http2HeadOf(head: string): Http2RequestHead {
  const lines = head.split('\r\n');
  const start = lines[0] ?? '';
  const sp1 = start.indexOf(' ');
  const sp2 = start.lastIndexOf(' ');
  const method = start.slice(0, sp1);
  let path = start.slice(sp1 + 1, sp2 > sp1 ? sp2 : undefined);
  if (!path.startsWith('/') && path !== '*') {
    // absolute-form: the path part (the authority travels as `Host`)
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(path);
    if (m !== null) path = path.slice(m[0].length) || '/';
  }
  const fields: [string, string][] = [];
  let authority: string | undefined;
  let named: Set<string> | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'host') authority ??= value;
    if (name === 'connection') {
      named ??= new Set();
      for (const n of value.split(',')) named.add(n.trim().toLowerCase());
    }
    fields.push([name, value]);
  }
  const headers: OutgoingHttpHeaders = {
    ':method': method,
    ':scheme': 'https',
    ':path': path,
  };
  if (authority !== undefined) headers[':authority'] = authority;
  for (const [name, value] of fields) {
    if (CONNECTION_SPECIFIC.has(name) || named?.has(name) === true) continue;
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (name === 'cookie') headers[name] = `${String(prev)}; ${value}`;
    else if (Array.isArray(prev)) prev.push(value);
    else headers[name] = [String(prev), value];
  }
  headers.te = 'trailers';
  return { method, headers };
}

/** `[name, value, …]` of a received HTTP/2 field list without its pseudo-fields (`:status`). */
export function rawWithoutPseudo(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    out.push(name, raw[i + 1] as string);
  }
  return out;
}

/** The status of a received header block. */
export function statusOf(headers: IncomingHttpHeaders): number {
  return Number(headers[':status']);
}
