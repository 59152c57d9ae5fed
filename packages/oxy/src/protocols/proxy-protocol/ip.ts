/**
 * IP addresses between text and bytes, sans-IO, for the PROXY codecs. Parsing is strict in the
 * way the PROXY v1 line demands (IPv4: four decimals 0..255 without leading zeros; IPv6: hex
 * groups with at most one `::`, 128 bits, an embedded dotted quad allowed as `inet_pton` does,
 * no zone index). Formatting gives Node's textual form, so a header's source compares equal to
 * what `socket.remoteAddress` would say for the same peer.
 */
import { formatAddress } from '../ip/address.ts';

/** Parses a dotted quad into `out[at..at+4)`; false when it is not canonical IPv4. */
export function parseIPv4Into(text: string, out: Uint8Array, at: number): boolean {
  let part = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i === text.length || text.charCodeAt(i) === 0x2e) {
      const len = i - start;
      if (len === 0 || len > 3 || part > 3) return false;
      if (len > 1 && text.charCodeAt(start) === 0x30) return false; // leading zero
      let v = 0;
      for (let j = start; j < i; j++) {
        const c = text.charCodeAt(j) - 0x30;
        if (c < 0 || c > 9) return false;
        v = v * 10 + c;
      }
      if (v > 255) return false;
      out[at + part] = v;
      part++;
      start = i + 1;
    }
  }
  return part === 4;
}

/** Parses IPv4 text into 4 bytes, or `null`. */
export function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return parseIPv4Into(text, out, 0) ? out : null;
}

function hexGroup(text: string): number {
  if (text.length === 0 || text.length > 4) return -1;
  let v = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const d =
      c >= 0x30 && c <= 0x39
        ? c - 0x30
        : c >= 0x61 && c <= 0x66
          ? c - 87
          : c >= 0x41 && c <= 0x46
            ? c - 55
            : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/** Parses IPv6 text into 16 bytes, or `null`. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45) return null;
  const out = new Uint8Array(16);
  const dbl = text.indexOf('::');
  if (dbl >= 0 && text.indexOf('::', dbl + 1) >= 0) return null;
  const head = dbl >= 0 ? text.slice(0, dbl) : text;
  const tail = dbl >= 0 ? text.slice(dbl + 2) : '';
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === '' ? [] : tail.split(':');
  const words: number[] = [];
  // An embedded IPv4 address may end the address (::ffff:1.2.3.4), never precede a `::`.
  let v4: Uint8Array | null = null;
  const lastParts = dbl >= 0 ? tailParts : headParts;
  const last = lastParts[lastParts.length - 1];
  if (last?.includes('.')) {
    v4 = parseIPv4(last);
    if (v4 === null) return null;
    lastParts.pop();
  }
  const groups = headParts.length + tailParts.length + (v4 === null ? 0 : 2);
  if (dbl < 0 ? groups !== 8 : groups > 7) return null;
  for (const p of headParts) words.push(hexGroup(p));
  for (let i = groups; i < 8; i++) words.push(0);
  for (const p of tailParts) words.push(hexGroup(p));
  if (v4 !== null) words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
  for (let i = 0; i < 8; i++) {
    const w = words[i]!;
    if (w < 0) return null;
    out[i * 2] = w >> 8;
    out[i * 2 + 1] = w & 0xff;
  }
  return out;
}

/** `a.b.c.d` from 4 bytes at `at`. */
export function formatIPv4(bytes: Uint8Array, at = 0): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/** True when the 16 bytes at `at` are an IPv4-mapped address (`::ffff:0:0/96`). */
export function isV4Mapped(bytes: Uint8Array, at = 0): boolean {
  for (let i = 0; i < 10; i++) if (bytes[at + i] !== 0) return false;
  return bytes[at + 10] === 0xff && bytes[at + 11] === 0xff;
}

/**
 * RFC 5952 text of the 16 bytes at `at`: lower case, the longest run of two or more zero
 * groups (the first on a tie) as `::`, and `::ffff:a.b.c.d` for an IPv4-mapped address.
 */
export function formatIPv6(bytes: Uint8Array, at = 0): string {
  if (isV4Mapped(bytes, at)) return `::ffff:${formatIPv4(bytes, at + 12)}`;
  return formatAddress(bytes, at, 16);
}

/** 16 bytes of an IPv6 address, or of an IPv4 address as IPv4-mapped; `null` if neither. */
export function toV6Bytes(host: string): Uint8Array | null {
  const v4 = parseIPv4(host);
  if (v4 !== null) {
    const out = new Uint8Array(16);
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  return parseIPv6(host);
}

/** `host:port`, or `[host]:port` for IPv6. */
export function formatSocketAddr(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
