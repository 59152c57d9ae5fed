/**
 * Upper-layer checksums of a parsed packet: TCP, UDP and ICMPv6 with the pseudo-header of their
 * IP version, ICMPv4 without. One place knows where each protocol keeps its checksum field and
 * that a UDP checksum of 0 means "none" (IPv4 only; RFC 768) and is sent as 0xffff.
 *
 * Ordering rule: rewrite the packet first, then `fillL4Checksum` (a full recompute), or use the
 * incremental helpers of `checksum.ts` as the NAT does.
 */
import { internetChecksum, pseudoHeaderSum } from './checksum.ts';
import { IP_PROTO, type IpPacket } from './packet.ts';

/** Offset of the checksum field inside the upper-layer header, or -1 for other protocols. */
export function l4ChecksumField(protocol: number): number {
  switch (protocol) {
    case IP_PROTO.TCP:
      return 16;
    case IP_PROTO.UDP:
      return 6;
    case IP_PROTO.ICMP:
    case IP_PROTO.ICMPV6:
      return 2;
    default:
      return -1;
  }
}

/** The unfolded pseudo-header sum for the packet's upper layer (0 for ICMPv4, which has none). */
export function l4PseudoSum(p: IpPacket): number {
  if (p.protocol === IP_PROTO.ICMP) return 0;
  return pseudoHeaderSum(
    p.buf,
    p.srcOffset,
    p.dstOffset,
    p.addrLength,
    p.protocol,
    p.buf.length - p.l4Offset,
  );
}

/** Whether the upper-layer checksum is right (true for protocols without one, and IPv4 UDP 0). */
export function l4ChecksumOk(p: IpPacket): boolean {
  const field = l4ChecksumField(p.protocol);
  if (field < 0 || p.l4Offset + field + 2 > p.buf.length) return field < 0;
  if (p.protocol === IP_PROTO.UDP && p.version === 4 && p.buf.readUInt16BE(p.l4Offset + 6) === 0) return true;
  return internetChecksum(p.buf, p.l4Offset, p.buf.length, l4PseudoSum(p)) === 0;
}

/** Recomputes the upper-layer checksum in place (after the packet was built or rewritten). */
export function fillL4Checksum(p: IpPacket): void {
  const field = l4ChecksumField(p.protocol);
  if (field < 0 || p.l4Offset + field + 2 > p.buf.length) return;
  const at = p.l4Offset + field;
  p.buf.writeUInt16BE(0, at);
  let sum = internetChecksum(p.buf, p.l4Offset, p.buf.length, l4PseudoSum(p));
  if (sum === 0 && p.protocol === IP_PROTO.UDP) sum = 0xffff;
  p.buf.writeUInt16BE(sum, at);
}

/** Recomputes the IPv4 header checksum in place (no-op for IPv6, which has none). */
export function fillIpv4Checksum(p: IpPacket): void {
  if (p.version !== 4) return;
  p.buf.writeUInt16BE(0, 10);
  p.buf.writeUInt16BE(internetChecksum(p.buf, 0, p.l4Offset), 10);
}

/**
 * Recomputes every checksum of a packet after a hook rewrote it: the upper layer's (skipped for
 * a fragment, whose checksum covers bytes it lacks) and the IPv4 header's.
 */
export function fillChecksums(p: IpPacket): void {
  if (p.fragment === null) fillL4Checksum(p);
  fillIpv4Checksum(p);
}
