/**
 * Whether a connect would come back to one of this proxy's own listeners: the loop guard of egress
 * (`egress/connect.ts`, at each connect) and of `--check` (`settings-check.ts`, for a fixed
 * target) share this one reading of addresses, so that no spelling of an address slips past
 * one of them: IPv4-mapped IPv6 in either form (`::ffff:127.0.0.1`, `::ffff:7f00:1`), bracketed
 * IPv6, and the unspecified addresses, which Linux connects to loopback.
 */
import net from 'node:net';
import os from 'node:os';
import { unmappedIp } from '../context/addr.ts';

/**
 * The address a connect to `ip` reaches, in the form a socket reports it: IPv6 in canonical text,
 * IPv4-mapped IPv6 as IPv4, `0.0.0.0` as `127.0.0.1` and `::` as `::1`. Null when not an IP.
 */
export function reachedIp(ip: string): string | null {
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const family = net.isIP(bare);
  if (family === 0) return null;
  const text =
    family === 6 ? unmappedIp(new net.SocketAddress({ address: bare, family: 'ipv6' }).address) : bare;
  return text === '0.0.0.0' ? '127.0.0.1' : text === '::' ? '::1' : text;
}

/** True for 127.0.0.0/8 and ::1, as {@link reachedIp} writes them. */
function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

/** True for a listening host that takes every address of its family (`0.0.0.0`, `::`). */
export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

/**
 * True when connecting to `ip` reaches a listener on `listening` at the same port: the same
 * address once both are read by {@link reachedIp}, or, for a listener on every address, loopback
 * or one of this host's own addresses.
 */
export function reachesListener(listening: string, ip: string): boolean {
  const to = reachedIp(ip);
  if (to === null) return false;
  if (isWildcard(listening)) return isLoopback(to) || hostAddresses().has(to);
  return to === reachedIp(listening);
}

/** This host's interface addresses now, as {@link reachedIp} writes them. */
function hostAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces()))
    for (const i of list ?? []) {
      const ip = reachedIp(i.address);
      if (ip !== null) out.add(ip);
    }
  return out;
}
