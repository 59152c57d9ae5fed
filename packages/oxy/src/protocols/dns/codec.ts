/**
 * DNS wire format (RFC 1035 §4): header, questions and resource records, sans-IO.
 *
 * It exists for the test DNS server (`src/testing/dns-server.ts`), which must answer the real
 * resolver with real TTLs, NXDOMAIN and SERVFAIL; production lookups go through c-ares
 * (`dns.Resolver`). Decoding is strict and bounded: every read is checked against the buffer,
 * labels are at most 63 bytes, names at most 255, and compression pointers must point strictly
 * backwards, which rules out loops. Encoding never compresses names (RFC 1035 allows that).
 */

import { isIP } from 'node:net';
import { OXY_ERR, OxyError } from '../../errors.ts';

/** Record types the codec knows by name (others are carried as raw `data`). */
export const DNS_TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  ANY: 255,
} as const;

/** Response codes (RFC 1035 §4.1.1). */
export const DNS_RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** The Internet class. */
export const DNS_CLASS_IN = 1;

/** The fixed 12-byte header, with the flags word unpacked. */
export interface DnsHeader {
  readonly id: number;
  /** True for a response, false for a query. */
  readonly qr: boolean;
  readonly opcode: number;
  /** Authoritative answer. */
  readonly aa: boolean;
  /** Truncated: the answer did not fit (the client should retry over TCP). */
  readonly tc: boolean;
  /** Recursion desired. */
  readonly rd: boolean;
  /** Recursion available. */
  readonly ra: boolean;
  readonly rcode: number;
}

/** One entry of the question section. Names are kept without the trailing dot. */
export interface DnsQuestion {
  readonly name: string;
  readonly type: number;
  readonly class: number;
}

/** One resource record. For A and AAAA, `address` holds the textual address. */
export interface DnsRecord {
  readonly name: string;
  readonly type: number;
  readonly class: number;
  /** Time to live in seconds (unsigned 32-bit). */
  readonly ttl: number;
  /** The raw RDATA. When encoding an A or AAAA record, `address` is used instead if given. */
  readonly data: Uint8Array;
  readonly address?: string;
}

/** A whole message. */
export interface DnsMessage {
  readonly header: DnsHeader;
  readonly questions: readonly DnsQuestion[];
  readonly answers: readonly DnsRecord[];
  readonly authorities: readonly DnsRecord[];
  readonly additionals: readonly DnsRecord[];
}

const MAX_LABEL = 63;
const MAX_NAME = 255;

function malformed(what: string, offset: number): OxyError {
  return new OxyError(OXY_ERR.DNS_MALFORMED, `malformed DNS message: ${what} at byte ${offset}`, {
    source: 'upstream',
  });
}

/** Decodes one DNS message. Throws an `OXY_ERR_DNS_MALFORMED` error naming the fault and offset. */
export function decodeDnsMessage(buf: Uint8Array): DnsMessage {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 12) throw malformed(`header needs 12 bytes, got ${buf.length}`, 0);
  const flags = view.getUint16(2);
  const header: DnsHeader = {
    id: view.getUint16(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    rcode: flags & 0xf,
  };
  const counts = [view.getUint16(4), view.getUint16(6), view.getUint16(8), view.getUint16(10)] as const;
  let offset = 12;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < counts[0]; i++) {
    const [name, next] = readName(buf, offset);
    if (next + 4 > buf.length) throw malformed('question truncated', next);
    questions.push({ name, type: view.getUint16(next), class: view.getUint16(next + 2) });
    offset = next + 4;
  }
  const sections: DnsRecord[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    const section = sections[s] as DnsRecord[];
    for (let i = 0; i < (counts[s + 1] as number); i++) {
      const [name, next] = readName(buf, offset);
      if (next + 10 > buf.length) throw malformed('record header truncated', next);
      const type = view.getUint16(next);
      const rdlength = view.getUint16(next + 8);
      const start = next + 10;
      if (start + rdlength > buf.length) throw malformed(`record data of ${rdlength} bytes truncated`, start);
      const data = buf.subarray(start, start + rdlength);
      const record: DnsRecord = {
        name,
        type,
        class: view.getUint16(next + 2),
        ttl: view.getUint32(next + 4),
        data,
        ...addressOf(type, data, start),
      };
      section.push(record);
      offset = start + rdlength;
    }
  }
  return {
    header,
    questions,
    answers: sections[0] as DnsRecord[],
    authorities: sections[1] as DnsRecord[],
    additionals: sections[2] as DnsRecord[],
  };
}

function addressOf(type: number, data: Uint8Array, offset: number): { address?: string } {
  if (type === DNS_TYPE.A) {
    if (data.length !== 4) throw malformed(`A record data must be 4 bytes, got ${data.length}`, offset);
    return { address: Array.from(data).join('.') };
  }
  if (type === DNS_TYPE.AAAA) {
    if (data.length !== 16) throw malformed(`AAAA record data must be 16 bytes, got ${data.length}`, offset);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2)
      groups.push((((data[i] as number) << 8) | (data[i + 1] as number)).toString(16));
    return { address: compressV6(groups) };
  }
  return {};
}

/** Shortens the longest run of two or more zero groups to `::` (RFC 5952). */
function compressV6(groups: string[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}

/**
 * Reads a possibly compressed name at `start`. Returns the name (no trailing dot, `''` for the
 * root) and the offset just past it in the original position.
 */
function readName(buf: Uint8Array, start: number): [string, number] {
  const labels: string[] = [];
  let offset = start;
  let end = -1; // where parsing resumes once the first pointer has been followed
  let length = 0;
  let lowestPointer = start; // a pointer must go strictly below every position visited so far
  for (;;) {
    if (offset >= buf.length) throw malformed('name truncated', offset);
    const len = buf[offset] as number;
    if (len === 0) {
      offset += 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (offset + 1 >= buf.length) throw malformed('compression pointer truncated', offset);
      const target = ((len & 0x3f) << 8) | (buf[offset + 1] as number);
      if (target >= lowestPointer)
        throw malformed(`compression pointer to ${target} does not point backwards`, offset);
      if (end < 0) end = offset + 2;
      lowestPointer = target;
      offset = target;
      continue;
    }
    if (kind !== 0) throw malformed(`bad label length byte 0x${len.toString(16)}`, offset);
    if (offset + 1 + len > buf.length) throw malformed(`label of ${len} bytes truncated`, offset);
    length += len + 1;
    if (length > MAX_NAME) throw malformed(`name longer than ${MAX_NAME} bytes`, offset);
    labels.push(Buffer.from(buf.subarray(offset + 1, offset + 1 + len)).toString('latin1'));
    offset += 1 + len;
  }
  return [labels.join('.'), end < 0 ? offset : end];
}

/** Encodes a message (names uncompressed). Throws on a label over 63 bytes or a name over 255. */
export function encodeDnsMessage(msg: DnsMessage): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(12);
  const h = msg.header;
  head.writeUInt16BE(h.id, 0);
  head.writeUInt16BE(
    (h.qr ? 0x8000 : 0) |
      ((h.opcode & 0xf) << 11) |
      (h.aa ? 0x0400 : 0) |
      (h.tc ? 0x0200 : 0) |
      (h.rd ? 0x0100 : 0) |
      (h.ra ? 0x0080 : 0) |
      (h.rcode & 0xf),
    2,
  );
  head.writeUInt16BE(msg.questions.length, 4);
  head.writeUInt16BE(msg.answers.length, 6);
  head.writeUInt16BE(msg.authorities.length, 8);
  head.writeUInt16BE(msg.additionals.length, 10);
  parts.push(head);
  for (const q of msg.questions) {
    parts.push(encodeName(q.name));
    const tail = Buffer.alloc(4);
    tail.writeUInt16BE(q.type, 0);
    tail.writeUInt16BE(q.class, 2);
    parts.push(tail);
  }
  for (const r of [...msg.answers, ...msg.authorities, ...msg.additionals]) {
    const data = r.address === undefined ? Buffer.from(r.data) : encodeAddress(r.address);
    parts.push(encodeName(r.name));
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(r.type, 0);
    fixed.writeUInt16BE(r.class, 2);
    fixed.writeUInt32BE(r.ttl >>> 0, 4);
    fixed.writeUInt16BE(data.length, 8);
    parts.push(fixed, data);
  }
  return Buffer.concat(parts);
}

/** Encodes a name as labels (RFC 1035 §3.1). A trailing dot is ignored. */
export function encodeName(name: string): Buffer {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  const labels = trimmed === '' ? [] : trimmed.split('.');
  const parts: Buffer[] = [];
  for (const label of labels) {
    const bytes = Buffer.from(label, 'latin1');
    if (bytes.length === 0 || bytes.length > MAX_LABEL) {
      throw new RangeError(`DNS label "${label}" in "${name}" must be 1 to ${MAX_LABEL} bytes`);
    }
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > MAX_NAME) throw new RangeError(`DNS name "${name}" is longer than ${MAX_NAME} bytes`);
  return out;
}

/** The RDATA of an A or AAAA record for a textual address. */
export function encodeAddress(address: string): Buffer {
  const family = isIP(address);
  if (family === 4) return Buffer.from(address.split('.').map(Number));
  if (family !== 6) throw new RangeError(`"${address}" is not an IP address`);
  const [left = '', right] = address.split('::') as [string, string | undefined];
  const head = left === '' ? [] : left.split(':');
  const tail = right === undefined || right === '' ? [] : right.split(':');
  // A dotted IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const expand = (groups: string[]): string[] =>
    groups.flatMap((g) => {
      if (!g.includes('.')) return [g];
      const b = g.split('.').map(Number) as [number, number, number, number];
      return [((b[0] << 8) | b[1]).toString(16), ((b[2] << 8) | b[3]).toString(16)];
    });
  const h = expand(head);
  const t = expand(tail);
  const groups = right === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return out;
}
