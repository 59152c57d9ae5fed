/**
 * Flow keys: a compact string per direction of a 5-tuple, cheap to build from packet bytes.
 *
 * A key is the raw source and destination address bytes as latin1 (they are adjacent in both
 * IP headers, so one slice), then three UTF-16 code units: protocol, source port, destination
 * port. IPv4 keys are 11 characters, IPv6 keys 35, so the versions never collide. ICMP echo
 * uses the identifier as a port: a request is (id, 0) and a reply (0, id), so a reply's key is
 * its request's reverse key; other ICMP messages and protocols without ports use (0, 0).
 */

import { ICMP4, ICMP6 } from '../../protocols/icmp/icmp.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';

/** The key of one direction of a flow, from addresses in `buf` and the protocol and ports. */
export function flowKey(
  buf: Buffer,
  srcOffset: number,
  addrLength: number,
  protocol: number,
  sport: number,
  dport: number,
): string {
  return (
    buf.toString('latin1', srcOffset, srcOffset + 2 * addrLength) +
    String.fromCharCode(protocol, sport, dport)
  );
}

/** The key of the opposite direction (destination and source swapped). */
export function reverseFlowKey(
  buf: Buffer,
  srcOffset: number,
  addrLength: number,
  protocol: number,
  sport: number,
  dport: number,
): string {
  const dst = srcOffset + addrLength;
  return (
    buf.toString('latin1', dst, dst + addrLength) +
    buf.toString('latin1', srcOffset, dst) +
    String.fromCharCode(protocol, dport, sport)
  );
}

/**
 * The ports of a flow's key for the upper layer at `l4` in `buf` (bounds checked by the caller):
 * TCP/UDP ports, ICMP echo identifiers, else zeros. Writes into `out` to avoid an allocation.
 */
export function keyPorts(
  buf: Buffer,
  l4: number,
  end: number,
  protocol: number,
  version: 4 | 6,
  out: [number, number],
): void {
  out[0] = 0;
  out[1] = 0;
  if (protocol === IP_PROTO.TCP || protocol === IP_PROTO.UDP) {
    if (l4 + 4 > end) return;
    out[0] = buf.readUInt16BE(l4);
    out[1] = buf.readUInt16BE(l4 + 2);
    return;
  }
  if ((protocol === IP_PROTO.ICMP && version === 4) || (protocol === IP_PROTO.ICMPV6 && version === 6)) {
    if (l4 + 8 > end) return;
    const type = buf[l4]!;
    const id = buf.readUInt16BE(l4 + 4);
    if (type === (version === 4 ? ICMP4.ECHO_REQUEST : ICMP6.ECHO_REQUEST)) out[0] = id;
    else if (type === (version === 4 ? ICMP4.ECHO_REPLY : ICMP6.ECHO_REPLY)) out[1] = id;
  }
}

/** The forward key of a parsed packet (its upper-layer header must be present). */
export function packetFlowKey(p: IpPacket): string {
  const ports: [number, number] = [0, 0];
  keyPorts(p.buf, p.l4Offset, p.buf.length, p.protocol, p.version, ports);
  return flowKey(p.buf, p.srcOffset, p.addrLength, p.protocol, ports[0], ports[1]);
}
