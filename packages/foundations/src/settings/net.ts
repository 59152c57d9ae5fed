/**
 * Network addresses as written in config files: `host:port`, `[v6]:port`, Unix socket paths
 * and CIDR blocks. Parsers return either the value or `{ error }`, a short reason that the
 * settings helpers put after "expected …, got …", so users learn what exactly is wrong.
 */
import net from 'node:net';

/** A TCP/UDP address to connect to or bind: `host` is an IP (v6 without brackets) or a name. */
export interface SocketAddr {
  readonly host: string;
  readonly port: number;
}

/** Where a server listens: a TCP address, or a Unix domain socket path. */
export type ListenAddr =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** A parse failure with a short reason for the user. */
export interface ParseFailure {
  readonly error: string;
}

const HOSTNAME =
  /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/** Parses `host:port` or `[v6]:port`; IPv6 hosts are returned normalised and without brackets. */
export function parseSocketAddr(text: string, minPort = 0): SocketAddr | ParseFailure {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return { error: 'missing "]:port" after the IPv6 address' };
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!net.isIPv6(host)) return { error: `"${host}" is not an IPv6 address` };
    // Node keeps no zone in the address it normalises, so `%eth0` would be dropped silently.
    if (host.includes('%'))
      return { error: `"${host}": a zone (%…) is not supported, only global addresses` };
    host = new net.SocketAddress({ address: host, family: 'ipv6' }).address;
  } else {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return { error: 'a host:port, not a URL: drop the scheme' };
    const colon = text.lastIndexOf(':');
    if (colon < 0) return { error: 'missing ":port"' };
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return { error: 'an IPv6 address needs brackets, as in "[::1]:8080"' };
    if (host === '') return { error: 'missing host (use 0.0.0.0 or [::] for all addresses)' };
    if (!net.isIPv4(host) && (!HOSTNAME.test(host) || /^[\d.]+$/.test(host))) {
      return { error: `"${host}" is not an IPv4 address or host name` };
    }
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    return { error: `port must be a whole number from ${minPort} to 65535` };
  }
  return { host, port: Number(portText) };
}

/** Parses an address to connect to: {@link parseSocketAddr}, with a port from 1 (0 names no service). */
export function parseTargetAddr(text: string): SocketAddr | ParseFailure {
  const addr = parseSocketAddr(text, 1);
  if (!('error' in addr) && addr.port === 0)
    return { error: 'port 0 cannot be connected to: use 1 to 65535' };
  return addr;
}

/** Parses a listen address: `host:port`, `[v6]:port`, or an absolute Unix socket path. */
export function parseListenAddr(text: string): ListenAddr | ParseFailure {
  if (text.startsWith('/')) return { kind: 'unix', path: text };
  if (text.startsWith('.') || (!text.includes(':') && text.includes('/'))) {
    return { error: 'a Unix socket path must be absolute' };
  }
  if (!text.includes(':')) return { error: 'missing ":port" (a Unix socket path must be absolute)' };
  const addr = parseSocketAddr(text);
  return 'error' in addr ? addr : { kind: 'tcp', host: addr.host, port: addr.port };
}

/** Formats an address back to its config form: `127.0.0.1:80`, `[::1]:80`. */
export function formatSocketAddr(addr: SocketAddr): string {
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

/** Formats a listen address back to its config form (a path for Unix sockets). */
export function formatListenAddr(addr: ListenAddr): string {
  return addr.kind === 'unix' ? addr.path : formatSocketAddr(addr);
}

/** The 4 or 16 bytes of an IP address, or undefined. */
function ipBytes(ip: string): number[] | undefined {
  if (net.isIPv4(ip)) return ip.split('.').map(Number);
  if (!net.isIPv6(ip)) return undefined;
  let text = ip;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    tail.push(...v4[1]!.split('.').map(Number));
    text = `${text.slice(0, v4.index)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const groups = (s: string | undefined) => (s === undefined || s === '' ? [] : s.split(':'));
  const left = groups(head);
  const right = groups(rest);
  const middle = rest === undefined ? [] : Array(8 - left.length - right.length).fill('0');
  const words = [...left, ...middle, ...right].map((g) => Number.parseInt(g, 16));
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (tail.length > 0) bytes.splice(12, 4, ...tail);
  return bytes;
}

/**
 * Parses a CIDR block (`10.0.0.0/8`, `fc00::/7`) or a single address (taken as /32 or /128)
 * into its normalised form. Host bits set below the prefix are refused, with the intended
 * block named in the reason, since `10.0.0.1/8` is more often a typo than a wish.
 */
export function parseCidr(text: string): string | ParseFailure {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const bytes = ipBytes(ip);
  if (bytes === undefined) return { error: `"${ip}" is not an IP address` };
  const family = bytes.length === 4 ? 'ipv4' : 'ipv6';
  const max = bytes.length * 8;
  const prefixText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return { error: `prefix length must be 0 to ${max}` };
  }
  const prefix = Number(prefixText);
  const masked = bytes.map((b, i) => {
    const bits = Math.min(8, Math.max(0, prefix - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
  const toText = (bs: number[]) =>
    family === 'ipv4'
      ? bs.join('.')
      : new net.SocketAddress({
          address: Array.from({ length: 8 }, (_, i) =>
            ((bs[2 * i]! << 8) | bs[2 * i + 1]!).toString(16),
          ).join(':'),
          family,
        }).address;
  const normal = `${toText(masked)}/${prefix}`;
  if (masked.some((b, i) => b !== bytes[i])) return { error: `host bits are set; did you mean "${normal}"?` };
  return normal;
}
