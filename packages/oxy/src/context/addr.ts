/**
 * Address types shared by contexts and settings. Mirrors `ListenAddr` of `foundations/settings`
 * so that contexts do not depend on the settings module being loaded.
 */

/** Where a server listens: a TCP address, or a Unix domain socket path. */
export type ListenAddr =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** `ip` without the IPv4-mapped prefix a dual-stack socket reports IPv4 peers with (`::ffff:1.2.3.4`). */
export function unmappedIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** Formats a host and port as an authority, bracketing IPv6: `[::1]:80`. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * An address as records and log lines write it: `host:port`, or the empty string for none (host
 * `''`): a unit without a target, or a client on a Unix socket, whose socket is unnamed, so `:0`
 * or the endpoint's own path would name something it is not (the `endpoint` field says where
 * it came in).
 */
export function formatAddr(addr: { readonly host: string; readonly port: number }): string {
  return addr.host === '' ? '' : formatHostPort(addr.host, addr.port);
}

/** The target of a unit that has none (no fixed target, no PROXY header): only an egress hook can send it somewhere. */
export const NO_TARGET: Readonly<{ host: string; port: number }> = Object.freeze({ host: '', port: 0 });
