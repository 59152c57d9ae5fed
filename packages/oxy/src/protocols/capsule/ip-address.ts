/**
 * IP addresses between text and bytes for the capsule codecs (RFC 9484 carries raw 4- and
 * 16-byte addresses; Oxy's APIs use text). Text output follows RFC 5952 (lower case, the longest
 * run of two or more zero groups as `::`, the first on a tie). No zone identifiers: RFC 9484
 * does not carry them.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { capsuleError } from './codec.ts';

/** A parsed address: its version and its network-order bytes. */
export interface ParsedIp {
  readonly version: 4 | 6;
  readonly bytes: Uint8Array;
}

function parseV4(text: string, out: Uint8Array, at: number): void {
  const parts = text.split('.');
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
}

/** Parses an IPv4 or IPv6 literal (no brackets, no zone); `undefined` when it is neither. */
export function parseIp(text: string): ParsedIp | undefined {
  if (isIPv4(text)) {
    const bytes = new Uint8Array(4);
    parseV4(text, bytes, 0);
    return { version: 4, bytes };
  }
  if (!isIPv6(text) || text.includes('%')) return undefined;
  const bytes = new Uint8Array(16);
  let groups = text;
  let tailV4: string | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    tailV4 = text.slice(lastColon + 1);
    // The IPv4 tail stands for the last two groups.
    groups = text.slice(0, lastColon + 1) + '0:0';
  }
  const [head = '', tail] = groups.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const all =
    tail === undefined
      ? headGroups
      : [
          ...headGroups,
          ...new Array<string>(8 - headGroups.length - tailGroups.length).fill('0'),
          ...tailGroups,
        ];
  for (let i = 0; i < 8; i++) {
    const g = Number.parseInt(all[i] ?? '0', 16);
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  }
  if (tailV4 !== undefined) parseV4(tailV4, bytes, 12);
  return { version: 6, bytes };
}

/** The bytes of `text`, which must be an address of `version`; else a malformed-capsule error. */
export function ipBytes(text: string, version: number, what: string): Uint8Array {
  const ip = parseIp(text);
  if (ip === undefined || ip.version !== version) {
    throw capsuleError(`${what}: ${JSON.stringify(text)} is not an IPv${version} address`);
  }
  return ip.bytes;
}

/** Formats 4 or 16 network-order bytes as text. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) =>
    g
      .slice(from, to)
      .map((x) => x.toString(16))
      .join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

/** Orders two addresses of equal length as unsigned big-endian numbers. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return 0;
}
