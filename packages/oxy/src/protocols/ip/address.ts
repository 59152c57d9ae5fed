/**
 * IP addresses as bytes: textual ↔ 4 or 16 bytes, CIDR membership, and the address classes
 * that ICMP error generation must recognise (broadcast, multicast, unspecified).
 *
 * Packets carry addresses as bytes; the codecs and the flow tracker keep them as views into the
 * packet and only format them as text where a human or a socket API needs it.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { OXY_ERR, OxyError } from '../../errors.ts';

/** Parses a textual IPv4 or IPv6 address into 4 or 16 bytes. Throws a TypeError on junk. */
export function addressBytes(text: string): Buffer {
  if (isIPv4(text)) return Buffer.from(text.split('.').map(Number));
  const zone = text.indexOf('%');
  let s = zone >= 0 ? text.slice(0, zone) : text;
  if (!isIPv6(s)) throw new TypeError(`not an IP address: ${text}`);
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = s
      .slice(lastColon + 1)
      .split('.')
      .map(Number) as [number, number, number, number];
    const hi = ((v4[0] << 8) | v4[1]).toString(16);
    const lo = ((v4[2] << 8) | v4[3]).toString(16);
    s = `${s.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const words = (p: string): number[] => (p === '' ? [] : p.split(':').map((h) => Number.parseInt(h, 16)));
  const halves = s.split('::');
  let all: number[];
  if (halves.length === 1) all = words(s);
  else {
    const front = words(halves[0]!);
    const back = words(halves[1]!);
    all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  }
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(all[i] ?? 0, i * 2);
  return out;
}

/** Formats 4 or 16 bytes (RFC 5952 for IPv6: lower case, the longest run of zeros as `::`). */
export function formatAddress(
  bytes: Uint8Array,
  offset = 0,
  length: 4 | 16 = bytes.length - offset === 4 ? 4 : 16,
): string {
  if (length === 4) return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push((bytes[offset + i]! << 8) | bytes[offset + i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number, b: number) =>
    w
      .slice(a, b)
      .map((x) => x.toString(16))
      .join(':');
  if (best < 0) return hex(0, 8);
  return `${hex(0, best)}::${hex(best + bestLen, 8)}`;
}

/** A CIDR prefix as bytes. */
export interface Cidr {
  readonly bytes: Buffer;
  readonly prefix: number;
}

/** Parses `a.b.c.d/n` or `x::/n`; start-up code, so an invalid one throws an `OxyError`. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  try {
    const bytes = addressBytes(slash < 0 ? text : text.slice(0, slash));
    const max = bytes.length * 8;
    const prefix = slash < 0 ? max : Number(text.slice(slash + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
      throw new TypeError(`bad prefix length in ${text}`);
    return { bytes, prefix };
  } catch (e) {
    throw new OxyError(OXY_ERR.INVALID_APP, `invalid CIDR ${JSON.stringify(text)}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** Whether the address at `buf[offset]` (same family as `cidr`) is inside it. */
export function inCidr(cidr: Cidr, buf: Uint8Array, offset = 0): boolean {
  let bits = cidr.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((buf[offset + i]! ^ cidr.bytes[i]!) & mask) !== 0) return false;
  }
  return true;
}

/**
 * Whether a destination is one no ICMP error may be sent about (RFC 1812 §4.3.2.7, RFC 4443
 * §2.4 (e)): IPv4 limited broadcast, multicast (224/4), class E and 0/8; IPv6 multicast (ff00::/8)
 * and unspecified.
 */
export function isBroadcastOrMulticast(buf: Uint8Array, offset: number, length: 4 | 16): boolean {
  if (length === 4) {
    const a = buf[offset]!;
    return a >= 224 || a === 0;
  }
  return buf[offset] === 0xff;
}

/** Whether the address is all zeros (unspecified). */
export function isUnspecified(buf: Uint8Array, offset: number, length: 4 | 16): boolean {
  for (let i = 0; i < length; i++) if (buf[offset + i] !== 0) return false;
  return true;
}
