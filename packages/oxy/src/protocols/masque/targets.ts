/**
 * The values of MASQUE template variables, validated as RFC 9298 §3 and RFC 9484 §4.6 define
 * them, after percent-decoding. Pure functions: each returns the parsed value or a reason the
 * proxy puts in its 400 answer's `Proxy-Status` details.
 *
 * - `target_host`: a DNS name, an IPv4 literal or an IPv6 literal (no brackets, no zone ID).
 * - `target_port`: a decimal integer 1-65535.
 * - `target`: `*`, a DNS name, or an IP prefix `addr` or `addr/len` whose bits below the prefix
 *   are zero.
 * - `ipproto`: `*` or a decimal integer 0-255.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { compareBytes, parseIp } from '../capsule/ip-address.ts';

/** A validated value, or the reason it is invalid. */
export type Checked<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string };

const ok = <T>(value: T): Checked<T> => ({ ok: true, value });
const bad = <T>(reason: string): Checked<T> => ({ ok: false, reason });

/** A host as the client named it. */
export interface TargetHost {
  readonly host: string;
  readonly kind: 'dns' | 'ipv4' | 'ipv6';
}

/** The scope of a CONNECT-IP request's `target`. */
export type IpTarget =
  | { readonly kind: 'any' }
  | { readonly kind: 'dns'; readonly host: string }
  | {
      readonly kind: 'prefix';
      readonly version: 4 | 6;
      readonly address: string;
      readonly prefixLength: number;
    };

const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** True for a DNS name: dot-separated labels of letters, digits, `-` and `_`, 253 bytes at most. */
export function isDnsName(name: string): boolean {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length === 0 || n.length > 253) return false;
  const labels = n.split('.');
  // An all-numeric last label would read as a (bad) IPv4 address, not a name.
  if (/^\d+$/.test(labels[labels.length - 1]!)) return false;
  return labels.every((l) => LABEL.test(l));
}

/** Validates a decoded `target_host`. */
export function checkTargetHost(value: string): Checked<TargetHost> {
  if (value === '') return bad('target_host is empty');
  if (isIPv4(value)) return ok({ host: value, kind: 'ipv4' });
  if (value.includes(':')) {
    if (value.includes('%')) return bad('target_host: IPv6 zone identifiers are not supported');
    if (value.startsWith('[')) return bad('target_host: an IPv6 literal is given without brackets');
    return isIPv6(value)
      ? ok({ host: value, kind: 'ipv6' })
      : bad(`target_host ${JSON.stringify(value)} is not an IPv6 address`);
  }
  if (isDnsName(value)) return ok({ host: value.endsWith('.') ? value.slice(0, -1) : value, kind: 'dns' });
  return bad(`target_host ${JSON.stringify(value)} is not a DNS name or IP address`);
}

/** Validates a decoded `target_port`. */
export function checkTargetPort(value: string): Checked<number> {
  if (!/^\d{1,5}$/.test(value)) return bad(`target_port ${JSON.stringify(value)} is not a decimal port`);
  const port = Number(value);
  return port >= 1 && port <= 65535 ? ok(port) : bad(`target_port ${port} is outside 1-65535`);
}

/** Validates a decoded `ipproto`; `undefined` (absent) means `*`. */
export function checkIpProto(value: string | undefined): Checked<number | '*'> {
  if (value === undefined || value === '*') return ok('*');
  if (!/^\d{1,3}$/.test(value)) return bad(`ipproto ${JSON.stringify(value)} is not "*" or 0-255`);
  const n = Number(value);
  return n <= 255 ? ok(n) : bad(`ipproto ${n} is outside 0-255`);
}

/** Validates a decoded CONNECT-IP `target`; `undefined` (absent) means `*`. */
export function checkIpTarget(value: string | undefined): Checked<IpTarget> {
  if (value === undefined || value === '*') return ok({ kind: 'any' });
  if (value === '') return bad('target is empty');
  const slash = value.indexOf('/');
  const addr = slash >= 0 ? value.slice(0, slash) : value;
  const ip = parseIp(addr);
  if (ip === undefined) {
    if (slash < 0 && !value.includes(':') && isDnsName(value)) return ok({ kind: 'dns', host: value });
    return bad(`target ${JSON.stringify(value)} is not "*", a DNS name or an IP prefix`);
  }
  const bits = ip.version === 4 ? 32 : 128;
  let prefixLength = bits;
  if (slash >= 0) {
    const len = value.slice(slash + 1);
    if (!/^\d{1,3}$/.test(len) || Number(len) > bits)
      return bad(`target prefix length ${JSON.stringify(len)} is outside 0-${bits}`);
    prefixLength = Number(len);
  }
  const masked = ip.bytes.slice();
  for (let bit = prefixLength; bit < bits; bit++) masked[bit >> 3] = masked[bit >> 3]! & ~(0x80 >> (bit & 7));
  if (compareBytes(masked, ip.bytes) !== 0)
    return bad(`target ${value}: bits below the /${prefixLength} prefix are not zero`);
  return ok({ kind: 'prefix', version: ip.version, address: addr, prefixLength });
}
