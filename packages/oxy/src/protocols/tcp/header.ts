/**
 * TCP header (RFC 9293 §3.1): ports, sequence numbers, flags, data offset and options, sans-IO;
 * and MSS clamping, the one option rewrite a tunnel needs (a client behind a tunnel must not
 * announce a segment size the tunnel cannot carry).
 *
 * `parseTcp` checks the data offset against the bytes present and walks the options with
 * bounds; anything malformed throws `PacketError('bad_transport_header')`.
 */
import { updateChecksumWord } from '../ip/checksum.ts';
import { IP_PROTO, type IpPacket } from '../ip/packet.ts';
import { PacketError } from '../ip/packet-error.ts';

/** TCP flag bits (the low byte of the flags word). */
export const TCP_FLAG = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32, ECE: 64, CWR: 128 } as const;

/** TCP option kinds used here. */
export const TCP_OPT = { EOL: 0, NOP: 1, MSS: 2, WSCALE: 3, SACK_OK: 4, TIMESTAMP: 8 } as const;

/** A parsed TCP header. Sequence numbers are unsigned 32-bit. */
export interface TcpHeader {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  readonly ack: number;
  /** Header length in bytes (20–60). */
  readonly headerLength: number;
  /** Flag bits (`TCP_FLAG`). */
  readonly flags: number;
  readonly window: number;
  readonly checksum: number;
  readonly urgent: number;
  /** Offset of the header in the buffer it was parsed from. */
  readonly offset: number;
  /** Payload bytes after the header. */
  readonly payloadLength: number;
}

/** Parses the TCP header at `buf[offset]`, with the segment ending at `end`. */
export function parseTcp(buf: Buffer, offset: number, end = buf.length): TcpHeader {
  if (end - offset < 20) throw new PacketError('truncated', `TCP header needs 20 bytes, got ${end - offset}`);
  const headerLength = (buf[offset + 12]! >> 4) * 4;
  if (headerLength < 20)
    throw new PacketError('bad_transport_header', `TCP data offset ${headerLength / 4} < 5`);
  if (offset + headerLength > end)
    throw new PacketError('truncated', `TCP header of ${headerLength} bytes in ${end - offset}`);
  walkOptions(buf, offset + 20, offset + headerLength, () => undefined);
  return {
    srcPort: buf.readUInt16BE(offset),
    dstPort: buf.readUInt16BE(offset + 2),
    seq: buf.readUInt32BE(offset + 4),
    ack: buf.readUInt32BE(offset + 8),
    headerLength,
    flags: buf[offset + 13]!,
    window: buf.readUInt16BE(offset + 14),
    checksum: buf.readUInt16BE(offset + 16),
    urgent: buf.readUInt16BE(offset + 18),
    offset,
    payloadLength: end - offset - headerLength,
  };
}

/** Parses the TCP header of an IP packet. */
export function parseTcpOf(p: IpPacket): TcpHeader {
  return parseTcp(p.buf, p.l4Offset, p.buf.length);
}

/**
 * Calls `visit(kind, valueOffset, valueLength)` for each option in `buf[start, end)`; stops at
 * EOL. Throws on an option that overflows the header.
 */
export function walkOptions(
  buf: Buffer,
  start: number,
  end: number,
  visit: (kind: number, at: number, length: number) => void,
): void {
  let i = start;
  while (i < end) {
    const kind = buf[i]!;
    if (kind === TCP_OPT.EOL) return;
    if (kind === TCP_OPT.NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) throw new PacketError('bad_transport_header', `TCP option ${kind} has no length byte`);
    const len = buf[i + 1]!;
    if (len < 2 || i + len > end)
      throw new PacketError(
        'bad_transport_header',
        `TCP option ${kind} of length ${len} overflows the header`,
      );
    if (kind === TCP_OPT.MSS && len !== 4)
      throw new PacketError('bad_transport_header', `TCP MSS option of length ${len}`);
    visit(kind, i + 2, len - 2);
    i += len;
  }
}

/** The MSS option's value in the TCP header at `tcp.offset`, or null if absent. */
export function findMss(buf: Buffer, tcp: TcpHeader): number | null {
  let mss: number | null = null;
  walkOptions(buf, tcp.offset + 20, tcp.offset + tcp.headerLength, (kind, at) => {
    if (kind === TCP_OPT.MSS) mss = buf.readUInt16BE(at);
  });
  return mss;
}

/**
 * MSS clamping: lowers the MSS option of a SYN in `p` to `maxMss` if it announces more, fixing
 * the TCP checksum incrementally (RFC 1624). Returns the MSS now in the packet, or null when
 * the packet is not a SYN with an MSS option (RFC 9293 then means 536 or 1220; nothing to lower).
 */
export function clampMss(p: IpPacket, maxMss: number): number | null {
  if (p.protocol !== IP_PROTO.TCP) return null;
  const tcp = parseTcpOf(p);
  if ((tcp.flags & TCP_FLAG.SYN) === 0) return null;
  let result: number | null = null;
  walkOptions(p.buf, tcp.offset + 20, tcp.offset + tcp.headerLength, (kind, at) => {
    if (kind !== TCP_OPT.MSS) return;
    const mss = p.buf.readUInt16BE(at);
    result = mss;
    if (mss <= maxMss) return;
    // The option may sit at an odd offset; update the checksum over the aligned words it touches.
    const odd = ((at - tcp.offset) & 1) === 1;
    const before = wordsAt(p.buf, at, odd);
    p.buf.writeUInt16BE(maxMss, at);
    const after = wordsAt(p.buf, at, odd);
    let sum = tcp.checksum;
    for (let w = 0; w < before.length; w++) sum = updateChecksumWord(sum, before[w]!, after[w]!);
    p.buf.writeUInt16BE(sum, tcp.offset + 16);
    result = maxMss;
  });
  return result;
}

/** The one or two checksummed 16-bit words covering the 2 bytes at `at`. */
function wordsAt(buf: Buffer, at: number, odd: boolean): number[] {
  return odd ? [buf.readUInt16BE(at - 1), buf.readUInt16BE(at + 1)] : [buf.readUInt16BE(at)];
}
