/**
 * UDP header (RFC 768), sans-IO: ports, length and checksum. The length field must cover the
 * header and fit the bytes present; a zero checksum means "none" over IPv4 and is refused over
 * IPv6 (RFC 8200 §8.1) by `l4ChecksumOk`'s caller, not here.
 */
import type { IpPacket } from '../ip/packet.ts';
import { PacketError } from '../ip/packet-error.ts';

/** A parsed UDP header. */
export interface UdpHeader {
  readonly srcPort: number;
  readonly dstPort: number;
  /** The length field: header plus payload. */
  readonly length: number;
  readonly checksum: number;
  /** Offset of the header in the buffer. */
  readonly offset: number;
}

/** Parses the UDP header at `buf[offset]`, with the datagram ending at `end`. */
export function parseUdp(buf: Buffer, offset: number, end = buf.length): UdpHeader {
  if (end - offset < 8) throw new PacketError('truncated', `UDP header needs 8 bytes, got ${end - offset}`);
  const length = buf.readUInt16BE(offset + 4);
  if (length < 8) throw new PacketError('bad_transport_header', `UDP length ${length} < 8`);
  if (offset + length > end)
    throw new PacketError('truncated', `UDP length ${length} > ${end - offset} bytes`);
  return {
    srcPort: buf.readUInt16BE(offset),
    dstPort: buf.readUInt16BE(offset + 2),
    length,
    checksum: buf.readUInt16BE(offset + 6),
    offset,
  };
}

/** Parses the UDP header of an IP packet. */
export function parseUdpOf(p: IpPacket): UdpHeader {
  return parseUdp(p.buf, p.l4Offset, p.buf.length);
}

/** The payload of the UDP datagram in `p` (a view, no copy). */
export function udpPayload(p: IpPacket, udp: UdpHeader = parseUdpOf(p)): Buffer {
  return p.buf.subarray(udp.offset + 8, udp.offset + udp.length);
}
