/**
 * CONNECT-IP control capsules (RFC 9484 §4.7): ADDRESS_ASSIGN, ADDRESS_REQUEST and
 * ROUTE_ADVERTISEMENT, their values read and written, sans-IO.
 *
 * Decoders enforce every rule the RFC says a receiver MUST abort the stream for: IP version 4
 * or 6, prefix length within the address, host bits below the prefix zero, request IDs non-zero
 * in a request, at least one requested address, start <= end in a range, and ranges ordered by
 * (version, protocol, start) without overlap within one version and protocol. Each violation is
 * `OXY_ERR_CAPSULE_MALFORMED`. Encoders check the same rules, so Oxy never sends what a peer
 * must reject. Request IDs are numbers: one above 2^53-1 is refused as malformed (a documented
 * limit; real peers count from 1).
 *
 * Addresses are carried as text (`192.0.2.1`, `2001:db8::1`); `ip-address.ts` converts.
 */

import { CAPSULE_TYPE, capsuleError, encodeCapsule } from './codec.ts';
import { compareBytes, formatIp, ipBytes } from './ip-address.ts';
import { readVarint, type VarintRead, varintLength, writeVarint } from './varint.ts';

/** An IP version as carried in capsules. */
export type IpVersion = 4 | 6;

/** An Assigned Address (ADDRESS_ASSIGN) or a Requested Address (ADDRESS_REQUEST). */
export interface IpPrefixEntry {
  /** For an assignment: the request answered, or 0 when unsolicited. For a request: non-zero. */
  readonly requestId: number;
  readonly version: IpVersion;
  /** The address in text form; in a request, `0.0.0.0` or `::` means "any". */
  readonly address: string;
  readonly prefixLength: number;
}

/** One IP Address Range of a ROUTE_ADVERTISEMENT. */
export interface IpAddressRange {
  readonly version: IpVersion;
  /** Inclusive bounds, in text form. */
  readonly start: string;
  readonly end: string;
  /** The IP protocol number allowed to the range; 0 allows all. */
  readonly protocol: number;
}

const scratch: VarintRead = { value: 0, length: 0 };

function addressLength(version: number): 4 | 16 {
  if (version === 4) return 4;
  if (version === 6) return 16;
  throw capsuleError(`IP version must be 4 or 6, got ${version}`);
}

function checkPrefix(bytes: Uint8Array, prefixLength: number, what: string): void {
  const bits = bytes.length * 8;
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > bits) {
    throw capsuleError(`${what}: prefix length ${prefixLength} exceeds ${bits} bits`);
  }
  for (let bit = prefixLength; bit < bits; bit++) {
    if ((bytes[bit >> 3]! & (0x80 >> (bit & 7))) !== 0) {
      throw capsuleError(`${what}: bits below the /${prefixLength} prefix are not zero`);
    }
  }
}

function readPrefixEntries(value: Uint8Array, what: string): IpPrefixEntry[] {
  const out: IpPrefixEntry[] = [];
  let off = 0;
  while (off < value.length) {
    const r = readVarint(value, off, scratch);
    if (r.length < 0) throw capsuleError(`${what}: truncated request ID`);
    if (r.value === Number.POSITIVE_INFINITY) throw capsuleError(`${what}: request ID above 2^53-1`);
    const requestId = r.value;
    off += r.length;
    if (off >= value.length) throw capsuleError(`${what}: truncated IP version`);
    const version = value[off]!;
    const n = addressLength(version);
    off += 1;
    if (off + n + 1 > value.length) throw capsuleError(`${what}: truncated address`);
    const bytes = value.subarray(off, off + n);
    const prefixLength = value[off + n]!;
    off += n + 1;
    checkPrefix(bytes, prefixLength, what);
    out.push({ requestId, version: version as IpVersion, address: formatIp(bytes), prefixLength });
  }
  return out;
}

function encodePrefixEntries(type: number, entries: readonly IpPrefixEntry[], what: string): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const e of entries) {
    const bytes = ipBytes(e.address, e.version, what);
    checkPrefix(bytes, e.prefixLength, what);
    const part = new Uint8Array(varintLength(e.requestId) + 2 + bytes.length);
    let off = writeVarint(part, 0, e.requestId);
    part[off++] = e.version;
    part.set(bytes, off);
    part[off + bytes.length] = e.prefixLength;
    parts.push(part);
    size += part.length;
  }
  const value = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    value.set(p, off);
    off += p.length;
  }
  return encodeCapsule(type, value);
}

/** Reads an ADDRESS_ASSIGN value: zero or more assigned addresses (empty removes all). */
export function decodeAddressAssign(value: Uint8Array): IpPrefixEntry[] {
  return readPrefixEntries(value, 'ADDRESS_ASSIGN');
}

/** Reads an ADDRESS_REQUEST value: one or more requested addresses, each with a non-zero ID. */
export function decodeAddressRequest(value: Uint8Array): IpPrefixEntry[] {
  const entries = readPrefixEntries(value, 'ADDRESS_REQUEST');
  checkRequest(entries);
  return entries;
}

function checkRequest(entries: readonly IpPrefixEntry[]): void {
  if (entries.length === 0) throw capsuleError('ADDRESS_REQUEST: no requested address');
  for (const e of entries) {
    if (e.requestId === 0) throw capsuleError('ADDRESS_REQUEST: request ID must not be zero');
  }
}

/** Frames an ADDRESS_ASSIGN capsule. */
export function encodeAddressAssign(entries: readonly IpPrefixEntry[]): Uint8Array {
  return encodePrefixEntries(CAPSULE_TYPE.ADDRESS_ASSIGN, entries, 'ADDRESS_ASSIGN');
}

/** Frames an ADDRESS_REQUEST capsule (at least one entry, non-zero request IDs). */
export function encodeAddressRequest(entries: readonly IpPrefixEntry[]): Uint8Array {
  checkRequest(entries);
  return encodePrefixEntries(CAPSULE_TYPE.ADDRESS_REQUEST, entries, 'ADDRESS_REQUEST');
}

interface RawRange {
  version: number;
  start: Uint8Array;
  end: Uint8Array;
  protocol: number;
}

/** Throws unless `ranges` follow RFC 9484 §4.7.3's order and do not overlap. */
function checkRanges(ranges: readonly RawRange[]): void {
  for (let i = 0; i < ranges.length; i++) {
    const b = ranges[i]!;
    if (compareBytes(b.start, b.end) > 0)
      throw capsuleError('ROUTE_ADVERTISEMENT: range start is after its end');
    if (i === 0) continue;
    const a = ranges[i - 1]!;
    if (a.version > b.version) throw capsuleError('ROUTE_ADVERTISEMENT: ranges not ordered by IP version');
    if (a.version === b.version && a.protocol > b.protocol) {
      throw capsuleError('ROUTE_ADVERTISEMENT: ranges not ordered by IP protocol');
    }
    if (a.version === b.version && a.protocol === b.protocol && compareBytes(a.end, b.start) >= 0) {
      throw capsuleError('ROUTE_ADVERTISEMENT: ranges overlap or are not ordered by address');
    }
  }
}

/** Reads a ROUTE_ADVERTISEMENT value: zero or more ordered, non-overlapping ranges. */
export function decodeRouteAdvertisement(value: Uint8Array): IpAddressRange[] {
  const raw: RawRange[] = [];
  let off = 0;
  while (off < value.length) {
    const version = value[off]!;
    const n = addressLength(version);
    if (off + 1 + 2 * n + 1 > value.length) throw capsuleError('ROUTE_ADVERTISEMENT: truncated range');
    const start = value.subarray(off + 1, off + 1 + n);
    const end = value.subarray(off + 1 + n, off + 1 + 2 * n);
    raw.push({ version, start, end, protocol: value[off + 1 + 2 * n]! });
    off += 2 + 2 * n;
  }
  checkRanges(raw);
  return raw.map((r) => ({
    version: r.version as IpVersion,
    start: formatIp(r.start),
    end: formatIp(r.end),
    protocol: r.protocol,
  }));
}

/** Frames a ROUTE_ADVERTISEMENT capsule; `ranges` must already be in the RFC's order. */
export function encodeRouteAdvertisement(ranges: readonly IpAddressRange[]): Uint8Array {
  const raw = ranges.map((r) => {
    if (!Number.isInteger(r.protocol) || r.protocol < 0 || r.protocol > 255) {
      throw capsuleError(`ROUTE_ADVERTISEMENT: IP protocol must be 0-255, got ${r.protocol}`);
    }
    return {
      version: r.version,
      start: ipBytes(r.start, r.version, 'ROUTE_ADVERTISEMENT'),
      end: ipBytes(r.end, r.version, 'ROUTE_ADVERTISEMENT'),
      protocol: r.protocol,
    };
  });
  checkRanges(raw);
  const value = new Uint8Array(raw.reduce((n, r) => n + 2 + 2 * r.start.length, 0));
  let off = 0;
  for (const r of raw) {
    value[off] = r.version;
    value.set(r.start, off + 1);
    value.set(r.end, off + 1 + r.start.length);
    value[off + 1 + 2 * r.start.length] = r.protocol;
    off += 2 + 2 * r.start.length;
  }
  return encodeCapsule(CAPSULE_TYPE.ROUTE_ADVERTISEMENT, value);
}
