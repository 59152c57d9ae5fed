/**
 * IPv4 (RFC 791) and IPv6 (RFC 8200) header parsing, sans-IO and strict.
 *
 * `parseIp` reads the fixed header, checks every length against the buffer, verifies the IPv4
 * header checksum, walks IPv4 options and IPv6 extension headers with bounds (hop-by-hop only
 * first, at most `MAX_EXTENSION_HEADERS`), and stops at the upper-layer header. The result holds
 * offsets into the packet, never copies, so the flow tracker and the NAT read and rewrite the
 * same bytes. Anything malformed throws a `PacketError` with a reason.
 *
 * Ordering rule: a non-first fragment has no upper-layer header; its `protocol` is the
 * fragment's next header but `l4Offset` points at fragment data. Reassemble (`reassembly.ts`)
 * before reading ports.
 */
import { internetChecksum } from './checksum.ts';
import { PacketError } from './packet-error.ts';

/** IP protocol numbers (IANA) the layer-3 code knows by name. */
export const IP_PROTO = {
  HOPOPT: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPV6_ROUTE: 43,
  IPV6_FRAG: 44,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  IPV6_NONXT: 59,
  IPV6_OPTS: 60,
} as const;

/** Most IPv6 extension headers walked before the packet is refused. */
export const MAX_EXTENSION_HEADERS = 8;

/** Fragmentation fields of a fragment (IPv4 flags/offset or the IPv6 fragment header). */
export interface IpFragmentInfo {
  /** Identification: 16 bits for IPv4, 32 for IPv6. */
  readonly id: number;
  /** Offset of this fragment's data in the original payload, in bytes. */
  readonly offset: number;
  /** More fragments follow. */
  readonly more: boolean;
}

/** A parsed IP packet: header fields and offsets into `buf`. */
export interface IpPacket {
  readonly version: 4 | 6;
  /** The packet, trimmed to its total length (a longer buffer's tail is ignored). */
  readonly buf: Buffer;
  readonly addrLength: 4 | 16;
  /** Offset of the source address in `buf` (12 for IPv4, 8 for IPv6). */
  readonly srcOffset: number;
  /** Offset of the destination address in `buf` (16 for IPv4, 24 for IPv6). */
  readonly dstOffset: number;
  /** TTL or hop limit. */
  readonly ttl: number;
  /** The upper-layer protocol (after IPv6 extension headers). */
  readonly protocol: number;
  /** Offset of the upper-layer header: fixed header + options or extension headers. */
  readonly l4Offset: number;
  /** IPv4 don't-fragment flag (always true for IPv6: routers never fragment it). */
  readonly dontFragment: boolean;
  /** Non-null when the packet is a fragment (not offset 0 with no more following). */
  readonly fragment: IpFragmentInfo | null;
  /** IPv6: offset of the fragment header, -1 if none. */
  readonly fragmentHeaderOffset: number;
  /** IPv6: offset of the next-header byte that names the fragment header, -1 if none. */
  readonly fragmentNextHeaderField: number;
}

/** Options of `parseIp`. */
export interface ParseIpOptions {
  /**
   * A packet quoted in an ICMP error: its total length may exceed the bytes present and its
   * checksum is not verified (RFC 792 quotes only the header and 8 bytes). Default false.
   */
  readonly quoted?: boolean;
  /** Verify the IPv4 header checksum. Default true (false for quoted packets). */
  readonly verifyChecksum?: boolean;
}

/** Parses an IPv4 or IPv6 packet; throws `PacketError` if malformed. */
export function parseIp(buf: Buffer, opts: ParseIpOptions = {}): IpPacket {
  if (buf.length < 1) throw new PacketError('truncated', 'empty packet');
  const v = buf[0]! >> 4;
  if (v === 4) return parseIpv4(buf, opts);
  if (v === 6) return parseIpv6(buf, opts);
  throw new PacketError('bad_version', `IP version ${v} is neither 4 nor 6`);
}

function parseIpv4(buf: Buffer, opts: ParseIpOptions): IpPacket {
  if (buf.length < 20) throw new PacketError('truncated', `IPv4 header needs 20 bytes, got ${buf.length}`);
  const ihl = (buf[0]! & 0x0f) * 4;
  if (ihl < 20) throw new PacketError('bad_header_length', `IPv4 IHL ${ihl / 4} is below 5`);
  if (ihl > buf.length) throw new PacketError('truncated', `IPv4 header of ${ihl} bytes in ${buf.length}`);
  const total = buf.readUInt16BE(2);
  if (total < ihl) throw new PacketError('bad_total_length', `IPv4 total length ${total} < header ${ihl}`);
  let pkt = buf;
  if (total > buf.length) {
    if (!opts.quoted) throw new PacketError('truncated', `IPv4 total length ${total} > ${buf.length} bytes`);
  } else if (total < buf.length) pkt = buf.subarray(0, total);
  if ((opts.verifyChecksum ?? !opts.quoted) && internetChecksum(buf, 0, ihl) !== 0)
    throw new PacketError('bad_checksum', 'IPv4 header checksum mismatch');
  if (ihl > 20) checkIpv4Options(buf, ihl);
  const flagsFrag = buf.readUInt16BE(6);
  const offset = (flagsFrag & 0x1fff) * 8;
  const more = (flagsFrag & 0x2000) !== 0;
  if (offset + total > 65535)
    throw new PacketError('bad_fragment', `IPv4 fragment at ${offset} runs past 65535 bytes`);
  return {
    version: 4,
    buf: pkt,
    addrLength: 4,
    srcOffset: 12,
    dstOffset: 16,
    ttl: buf[8]!,
    protocol: buf[9]!,
    l4Offset: ihl,
    dontFragment: (flagsFrag & 0x4000) !== 0,
    fragment: offset !== 0 || more ? { id: buf.readUInt16BE(4), offset, more } : null,
    fragmentHeaderOffset: -1,
    fragmentNextHeaderField: -1,
  };
}

/** Walks IPv4 options (RFC 791 §3.1): EOL ends, NOP is one byte, others are type-length-value. */
function checkIpv4Options(buf: Buffer, ihl: number): void {
  let i = 20;
  while (i < ihl) {
    const type = buf[i]!;
    if (type === 0) return; // end of option list: the rest is padding
    if (type === 1) {
      i++;
      continue;
    }
    if (i + 1 >= ihl) throw new PacketError('bad_options', `IPv4 option ${type} has no length byte`);
    const len = buf[i + 1]!;
    if (len < 2 || i + len > ihl)
      throw new PacketError('bad_options', `IPv4 option ${type} of length ${len} overflows the header`);
    i += len;
  }
}

function parseIpv6(buf: Buffer, opts: ParseIpOptions): IpPacket {
  if (buf.length < 40) throw new PacketError('truncated', `IPv6 header needs 40 bytes, got ${buf.length}`);
  const payloadLength = buf.readUInt16BE(4);
  // A zero payload length means a jumbogram (RFC 2675), which no tunnel here carries.
  if (payloadLength === 0 && buf[6] !== IP_PROTO.IPV6_NONXT)
    throw new PacketError('bad_total_length', 'IPv6 payload length 0 (jumbograms are not supported)');
  const total = 40 + payloadLength;
  let pkt = buf;
  if (total > buf.length) {
    if (!opts.quoted) throw new PacketError('truncated', `IPv6 total length ${total} > ${buf.length} bytes`);
  } else if (total < buf.length) pkt = buf.subarray(0, total);
  const end = pkt.length;
  let next = buf[6]!;
  let nextField = 6;
  let off = 40;
  let count = 0;
  let fragment: IpFragmentInfo | null = null;
  let fragOff = -1;
  let fragField = -1;
  walk: for (;;) {
    switch (next) {
      case IP_PROTO.HOPOPT:
      case IP_PROTO.IPV6_ROUTE:
      case IP_PROTO.IPV6_OPTS: {
        if (next === IP_PROTO.HOPOPT && count !== 0)
          throw new PacketError('bad_extension_header', 'IPv6 hop-by-hop options not first');
        if (off + 2 > end) throw new PacketError('truncated', `IPv6 extension header ${next} truncated`);
        const len = (buf[off + 1]! + 1) * 8;
        if (off + len > end)
          throw new PacketError('truncated', `IPv6 extension header ${next} of ${len} bytes overflows`);
        if (next !== IP_PROTO.IPV6_ROUTE) checkIpv6Options(buf, off + 2, off + len);
        break;
      }
      case IP_PROTO.IPV6_FRAG: {
        if (fragOff >= 0) throw new PacketError('bad_fragment', 'IPv6 packet with two fragment headers');
        if (off + 8 > end) throw new PacketError('truncated', 'IPv6 fragment header truncated');
        const word = buf.readUInt16BE(off + 2);
        const offset = word & 0xfff8;
        const more = (word & 1) !== 0;
        fragOff = off;
        fragField = nextField;
        // An atomic fragment (offset 0, no more, RFC 6946) is processed as a whole packet.
        if (offset !== 0 || more) fragment = { id: buf.readUInt32BE(off + 4), offset, more };
        if (!opts.quoted && fragment !== null && more && (end - off - 8) % 8 !== 0)
          throw new PacketError('bad_fragment', 'IPv6 fragment data not a multiple of 8 bytes');
        if (!opts.quoted && offset + (end - off - 8) > 65535)
          throw new PacketError('bad_fragment', `IPv6 fragment at ${offset} runs past 65535 bytes`);
        if (++count > MAX_EXTENSION_HEADERS) throw tooMany();
        next = buf[off]!;
        nextField = off;
        off += 8;
        if (offset !== 0) break walk; // non-first fragment: the rest is fragment data
        continue;
      }
      case IP_PROTO.AH: {
        if (off + 2 > end) throw new PacketError('truncated', 'IPv6 authentication header truncated');
        const len = (buf[off + 1]! + 2) * 4;
        if (off + len > end) throw new PacketError('truncated', `IPv6 AH of ${len} bytes overflows`);
        if (++count > MAX_EXTENSION_HEADERS) throw tooMany();
        next = buf[off]!;
        nextField = off;
        off += len;
        continue;
      }
      default:
        break walk; // an upper layer (TCP, UDP, ICMPv6, ESP, no next header, unknown)
    }
    if (++count > MAX_EXTENSION_HEADERS) throw tooMany();
    const len = (buf[off + 1]! + 1) * 8;
    next = buf[off]!;
    nextField = off;
    off += len;
  }
  return {
    version: 6,
    buf: pkt,
    addrLength: 16,
    srcOffset: 8,
    dstOffset: 24,
    ttl: buf[7]!,
    protocol: next,
    l4Offset: off,
    dontFragment: true,
    fragment,
    fragmentHeaderOffset: fragOff,
    fragmentNextHeaderField: fragField,
  };
}

function tooMany(): PacketError {
  return new PacketError(
    'too_many_extension_headers',
    `more than ${MAX_EXTENSION_HEADERS} IPv6 extension headers`,
  );
}

/** Walks hop-by-hop or destination options (RFC 8200 §4.2): Pad1, then type-length-value. */
function checkIpv6Options(buf: Buffer, start: number, end: number): void {
  let i = start;
  while (i < end) {
    if (buf[i] === 0) {
      i++;
      continue;
    }
    if (i + 2 > end) throw new PacketError('bad_options', 'IPv6 option without a length byte');
    const len = 2 + buf[i + 1]!;
    if (i + len > end) throw new PacketError('bad_options', `IPv6 option ${buf[i]} overflows its header`);
    if (buf[i] === 0xc2) throw new PacketError('bad_options', 'IPv6 jumbo payload option');
    i += len;
  }
}

/** Whether the packet is the first fragment or not a fragment (so its upper-layer header is present). */
export function hasTransportHeader(p: IpPacket): boolean {
  return p.fragment === null || p.fragment.offset === 0;
}
