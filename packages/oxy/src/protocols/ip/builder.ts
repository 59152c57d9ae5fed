/**
 * Packet builders: whole IPv4/IPv6 packets around TCP, UDP and ICMP, with every checksum
 * filled. They exist for ICMP errors, echo replies, TCP resets, the datagram downgrade (UDP
 * payload → IP packet) and tests; the hot path rewrites packets in place instead (`nat.ts`).
 *
 * Ordering rule: the upper-layer bytes are built with a zero checksum, wrapped in the IP header,
 * and only then checksummed (the pseudo-header needs the addresses).
 */
import { addressBytes } from './address.ts';
import { internetChecksum } from './checksum.ts';
import { fillL4Checksum } from './l4-checksum.ts';
import { IP_PROTO, parseIp } from './packet.ts';

/** An address as text or as 4/16 bytes. */
export type AddressInput = string | Uint8Array;

function bytesOf(a: AddressInput): Uint8Array {
  return typeof a === 'string' ? addressBytes(a) : a;
}

/** Options of `buildIp`. */
export interface BuildIpOptions {
  /** Source and destination: both IPv4 or both IPv6; the family picks the IP version. */
  readonly src: AddressInput;
  readonly dst: AddressInput;
  readonly protocol: number;
  /** The upper-layer bytes (their checksum field, if any, is filled here). */
  readonly payload: Uint8Array;
  /** TTL or hop limit. Default 64. */
  readonly ttl?: number;
  /** IPv4 identification. Default 0. */
  readonly id?: number;
  /** IPv4 don't-fragment. Default true. */
  readonly dontFragment?: boolean;
  /** IPv4 TOS or IPv6 traffic class. Default 0. */
  readonly tos?: number;
  /**
   * Make a fragment instead (for tests of reassembly): IPv4 flags/offset, or an IPv6 fragment
   * header. The checksum of the upper layer is then left as given.
   */
  readonly fragment?: { readonly id: number; readonly offset: number; readonly more: boolean };
  /** Fill the upper-layer checksum. Default true (false for fragments). */
  readonly fillChecksum?: boolean;
}

/** Builds an IPv4 or IPv6 packet. */
export function buildIp(o: BuildIpOptions): Buffer {
  const src = bytesOf(o.src);
  const dst = bytesOf(o.dst);
  if (src.length !== dst.length) throw new TypeError('source and destination of different IP versions');
  const frag = o.fragment;
  let pkt: Buffer;
  if (src.length === 4) {
    pkt = Buffer.alloc(20 + o.payload.length);
    pkt[0] = 0x45;
    pkt[1] = o.tos ?? 0;
    pkt.writeUInt16BE(pkt.length, 2);
    pkt.writeUInt16BE(frag ? frag.id & 0xffff : (o.id ?? 0), 4);
    let flags = (o.dontFragment ?? !frag) ? 0x4000 : 0;
    if (frag) flags |= (frag.more ? 0x2000 : 0) | (frag.offset >> 3);
    pkt.writeUInt16BE(flags, 6);
    pkt[8] = o.ttl ?? 64;
    pkt[9] = o.protocol;
    pkt.set(src, 12);
    pkt.set(dst, 16);
    pkt.writeUInt16BE(internetChecksum(pkt, 0, 20), 10);
    pkt.set(o.payload, 20);
  } else {
    const fh = frag ? 8 : 0;
    pkt = Buffer.alloc(40 + fh + o.payload.length);
    pkt.writeUInt32BE(((6 << 28) | ((o.tos ?? 0) << 20)) >>> 0, 0);
    pkt.writeUInt16BE(fh + o.payload.length, 4);
    pkt[6] = frag ? IP_PROTO.IPV6_FRAG : o.protocol;
    pkt[7] = o.ttl ?? 64;
    pkt.set(src, 8);
    pkt.set(dst, 24);
    if (frag) {
      pkt[40] = o.protocol;
      pkt.writeUInt16BE((frag.offset & 0xfff8) | (frag.more ? 1 : 0), 42);
      pkt.writeUInt32BE(frag.id >>> 0, 44);
    }
    pkt.set(o.payload, 40 + fh);
  }
  if (o.fillChecksum ?? !frag) fillL4Checksum(parseIp(pkt));
  return pkt;
}

/** Options of `tcpSegment`. */
export interface TcpSegmentOptions {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq?: number;
  readonly ack?: number;
  /** `TCP_FLAG` bits. */
  readonly flags: number;
  /** Default 65535. */
  readonly window?: number;
  /** Raw option bytes (padded here to a multiple of 4 with EOL). */
  readonly options?: Uint8Array;
  readonly payload?: Uint8Array;
}

/** A TCP header and payload with a zero checksum (wrap with `buildIp`, which fills it). */
export function tcpSegment(o: TcpSegmentOptions): Buffer {
  const optLen = o.options ? (o.options.length + 3) & ~3 : 0;
  const payload = o.payload ?? new Uint8Array(0);
  const seg = Buffer.alloc(20 + optLen + payload.length);
  seg.writeUInt16BE(o.srcPort, 0);
  seg.writeUInt16BE(o.dstPort, 2);
  seg.writeUInt32BE((o.seq ?? 0) >>> 0, 4);
  seg.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  seg[12] = ((20 + optLen) / 4) << 4;
  seg[13] = o.flags;
  seg.writeUInt16BE(o.window ?? 65535, 14);
  if (o.options) seg.set(o.options, 20);
  seg.set(payload, 20 + optLen);
  return seg;
}

/** The MSS option bytes (kind 2, length 4). */
export function mssOption(mss: number): Buffer {
  return Buffer.from([2, 4, mss >> 8, mss & 0xff]);
}

/** A UDP header and payload with a zero checksum (wrap with `buildIp`, which fills it). */
export function udpDatagram(srcPort: number, dstPort: number, payload: Uint8Array): Buffer {
  const d = Buffer.alloc(8 + payload.length);
  d.writeUInt16BE(srcPort, 0);
  d.writeUInt16BE(dstPort, 2);
  d.writeUInt16BE(d.length, 4);
  d.set(payload, 8);
  return d;
}

/** An ICMP or ICMPv6 message: type, code, the 32-bit rest of header, then `body`. */
export function icmpMessage(type: number, code: number, rest: number, body: Uint8Array): Buffer {
  const m = Buffer.alloc(8 + body.length);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  m.set(body, 8);
  return m;
}

/** A whole UDP/IP packet: the datagram downgrade of one payload. */
export function buildUdpPacket(
  src: AddressInput,
  srcPort: number,
  dst: AddressInput,
  dstPort: number,
  payload: Uint8Array,
  ttl = 64,
): Buffer {
  return buildIp({ src, dst, protocol: IP_PROTO.UDP, payload: udpDatagram(srcPort, dstPort, payload), ttl });
}

/** A whole TCP/IP packet. */
export function buildTcpPacket(
  src: AddressInput,
  dst: AddressInput,
  seg: TcpSegmentOptions,
  ttl = 64,
): Buffer {
  return buildIp({ src, dst, protocol: IP_PROTO.TCP, payload: tcpSegment(seg), ttl });
}
