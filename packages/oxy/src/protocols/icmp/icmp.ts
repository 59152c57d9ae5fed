/**
 * ICMP (RFC 792) and ICMPv6 (RFC 4443) messages, sans-IO: type, code, echo identifier and
 * sequence, the MTU of "fragmentation needed" / "packet too big", and the packet quoted by an
 * error, parsed leniently (it is cut short by design) so errors can be matched to their flow.
 */
import { IP_PROTO, type IpPacket, parseIp } from '../ip/packet.ts';
import { PacketError } from '../ip/packet-error.ts';

/** ICMPv4 types used here. */
export const ICMP4 = {
  ECHO_REPLY: 0,
  DEST_UNREACH: 3,
  SOURCE_QUENCH: 4,
  REDIRECT: 5,
  ECHO_REQUEST: 8,
  TIME_EXCEEDED: 11,
  PARAM_PROBLEM: 12,
} as const;

/** ICMPv6 types used here. */
export const ICMP6 = {
  DEST_UNREACH: 1,
  PACKET_TOO_BIG: 2,
  TIME_EXCEEDED: 3,
  PARAM_PROBLEM: 4,
  ECHO_REQUEST: 128,
  ECHO_REPLY: 129,
} as const;

/** A parsed ICMP or ICMPv6 message. */
export interface IcmpMessage {
  readonly type: number;
  readonly code: number;
  readonly checksum: number;
  /** Echo request or reply. */
  readonly isEcho: boolean;
  readonly isEchoRequest: boolean;
  /** An error message (unreachable, time exceeded, too big, parameter problem, …). */
  readonly isError: boolean;
  /** Echo identifier and sequence (0 for other messages). */
  readonly id: number;
  readonly seq: number;
  /** The MTU of "packet too big" or "fragmentation needed" (0 otherwise). */
  readonly mtu: number;
  /** Offset of the message body (after the 8-byte header) in the packet. */
  readonly bodyOffset: number;
}

/** Whether an ICMP type (of IP version `version`) is an error message. */
export function isIcmpErrorType(version: 4 | 6, type: number): boolean {
  if (version === 6) return type < 128;
  return (
    type === ICMP4.DEST_UNREACH ||
    type === ICMP4.SOURCE_QUENCH ||
    type === ICMP4.REDIRECT ||
    type === ICMP4.TIME_EXCEEDED ||
    type === ICMP4.PARAM_PROBLEM
  );
}

/** Parses the ICMP message of `p` (protocol ICMP over IPv4 or ICMPv6 over IPv6). */
export function parseIcmp(p: IpPacket): IcmpMessage {
  const o = p.l4Offset;
  if (p.buf.length - o < 8)
    throw new PacketError('truncated', `ICMP header needs 8 bytes, got ${p.buf.length - o}`);
  const expected = p.version === 4 ? IP_PROTO.ICMP : IP_PROTO.ICMPV6;
  if (p.protocol !== expected)
    throw new PacketError('bad_transport_header', `protocol ${p.protocol} is not ICMP`);
  const type = p.buf[o]!;
  const code = p.buf[o + 1]!;
  const isEchoRequest = type === (p.version === 4 ? ICMP4.ECHO_REQUEST : ICMP6.ECHO_REQUEST);
  const isEcho = isEchoRequest || type === (p.version === 4 ? ICMP4.ECHO_REPLY : ICMP6.ECHO_REPLY);
  let mtu = 0;
  if (p.version === 6 && type === ICMP6.PACKET_TOO_BIG) mtu = p.buf.readUInt32BE(o + 4);
  else if (p.version === 4 && type === ICMP4.DEST_UNREACH && code === 4) mtu = p.buf.readUInt16BE(o + 6);
  return {
    type,
    code,
    checksum: p.buf.readUInt16BE(o + 2),
    isEcho,
    isEchoRequest,
    isError: isIcmpErrorType(p.version, type),
    id: isEcho ? p.buf.readUInt16BE(o + 4) : 0,
    seq: isEcho ? p.buf.readUInt16BE(o + 6) : 0,
    mtu,
    bodyOffset: o + 8,
  };
}

/** The packet quoted in an ICMP error, with the first 8 bytes of its upper layer. */
export interface QuotedPacket {
  readonly ip: IpPacket;
  /** TCP/UDP ports, or the echo identifier as `srcPort` for a quoted echo request; -1 if absent. */
  readonly srcPort: number;
  readonly dstPort: number;
}

/**
 * Parses the packet an ICMP error quotes (lenient about its length, strict about its header).
 * Throws `PacketError` when what is quoted is not a whole IP header of the same version.
 */
export function parseQuoted(p: IpPacket, msg: IcmpMessage): QuotedPacket {
  if (!msg.isError) throw new PacketError('bad_transport_header', `ICMP type ${msg.type} quotes no packet`);
  const ip = parseIp(p.buf.subarray(msg.bodyOffset), { quoted: true });
  if (ip.version !== p.version)
    throw new PacketError('bad_transport_header', 'ICMP error quotes another IP version');
  let srcPort = -1;
  let dstPort = -1;
  const o = ip.l4Offset;
  const whole = ip.fragment === null || ip.fragment.offset === 0;
  if (whole && ip.buf.length >= o + 4 && (ip.protocol === IP_PROTO.TCP || ip.protocol === IP_PROTO.UDP)) {
    srcPort = ip.buf.readUInt16BE(o);
    dstPort = ip.buf.readUInt16BE(o + 2);
  } else if (
    whole &&
    ip.buf.length >= o + 8 &&
    (ip.protocol === IP_PROTO.ICMP || ip.protocol === IP_PROTO.ICMPV6)
  ) {
    srcPort = ip.buf.readUInt16BE(o + 4);
    dstPort = ip.buf[o]!; // the quoted ICMP type, for matching echo flows
  }
  return { ip, srcPort, dstPort };
}
