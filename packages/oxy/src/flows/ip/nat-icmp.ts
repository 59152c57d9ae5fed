/**
 * NAT of ICMP errors coming out of the upgrade namespace: the kernel there answers a slot with
 * an error (port unreachable, packet too big) quoting the packet it got, (slot → listener).
 * Both the outer header and the quoted one are mapped back to (client, original destination),
 * so the client sees the error as coming from the host it talked to, about its own packet.
 *
 * The quoted transport checksum is fixed incrementally when quoted; the ICMP checksum and the
 * IPv4 header checksums are recomputed (the quoted bytes changed).
 */
import { parseIcmp, parseQuoted } from '../../protocols/icmp/icmp.ts';
import { updateChecksum } from '../../protocols/ip/checksum.ts';
import { fillIpv4Checksum, fillL4Checksum, l4ChecksumField } from '../../protocols/ip/l4-checksum.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import type { NatMapping } from './nat.ts';

/** What a translation needs of a mapping: the quoted packet becomes (client → original destination). */
export type IcmpNatTarget = Pick<
  NatMapping,
  'protocol' | 'clientAddr' | 'clientPort' | 'originalDstAddr' | 'originalDstPort'
>;

/**
 * Translates an ICMP error about a slot in place; returns its mapping, or null when `p` is not
 * an error about a mapped slot (left untouched). `lookup` gets the quoted packet's source.
 */
export function translateIcmpError<M extends IcmpNatTarget>(
  p: IpPacket,
  lookup: (addr: Buffer, port: number) => M | undefined,
): M | null {
  let q: ReturnType<typeof parseQuoted>;
  try {
    const msg = parseIcmp(p);
    if (!msg.isError) return null;
    q = parseQuoted(p, msg);
  } catch (e) {
    if (isPacketError(e)) return null;
    throw e;
  }
  const ip = q.ip;
  if (q.srcPort < 0 || (ip.protocol !== IP_PROTO.TCP && ip.protocol !== IP_PROTO.UDP)) return null;
  const m = lookup(ip.buf.subarray(ip.srcOffset, ip.srcOffset + ip.addrLength), q.srcPort);
  if (m === undefined || m.protocol !== ip.protocol) return null;
  const b = ip.buf;
  const n = ip.addrLength;
  const oldAddrs = Buffer.from(b.subarray(ip.srcOffset, ip.srcOffset + 2 * n));
  const oldPorts = Buffer.from(b.subarray(ip.l4Offset, ip.l4Offset + 4));
  m.clientAddr.copy(b, ip.srcOffset);
  m.originalDstAddr.copy(b, ip.dstOffset);
  b.writeUInt16BE(m.clientPort, ip.l4Offset);
  b.writeUInt16BE(m.originalDstPort, ip.l4Offset + 2);
  const field = ip.l4Offset + l4ChecksumField(ip.protocol);
  if (field + 2 <= b.length) {
    const old = b.readUInt16BE(field);
    if (!(ip.protocol === IP_PROTO.UDP && old === 0)) {
      let sum = updateChecksum(old, oldAddrs, b.subarray(ip.srcOffset, ip.srcOffset + 2 * n));
      sum = updateChecksum(sum, oldPorts, b.subarray(ip.l4Offset, ip.l4Offset + 4));
      b.writeUInt16BE(sum, field);
    }
  }
  fillIpv4Checksum(ip);
  // Outer: from the original destination to the client.
  m.originalDstAddr.copy(p.buf, p.srcOffset);
  m.clientAddr.copy(p.buf, p.dstOffset);
  fillL4Checksum(p);
  fillIpv4Checksum(p);
  return m;
}
