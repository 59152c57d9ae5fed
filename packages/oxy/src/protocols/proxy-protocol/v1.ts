/**
 * PROXY protocol version 1, the text header: one US-ASCII line
 * `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, or `PROXY UNKNOWN …\r\n`, at most 107
 * bytes with the CRLF.
 *
 * Ordering rule: the end of the line is found first (a lone CR or LF is refused there, and 107
 * bytes without CRLF are `too_long`), and only a complete line is parsed into fields, as the
 * specification requires ("the receiver must wait for the CRLF … before starting to decode").
 */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip.ts';
import { PROXY_V1_MAX_LENGTH, type ProxyHeader, type ProxyHeaderInit, ProxyProtocolError } from './types.ts';

const PREFIX = 'PROXY';

/**
 * Checks the start of a v1 line (a prefix of `PROXY ` is enough) and finds its end. Returns the
 * length of the line with its CRLF, or -1 when more bytes are needed. Throws `bad_signature`,
 * `bad_line` or `too_long`.
 */
export function v1LineLength(bytes: Uint8Array): number {
  const n = Math.min(bytes.length, PREFIX.length);
  for (let i = 0; i < n; i++) {
    if (bytes[i] !== PREFIX.charCodeAt(i)) throw new ProxyProtocolError('bad_signature', 'not "PROXY"');
  }
  if (bytes.length > 5 && bytes[5] !== 0x20) throw new ProxyProtocolError('bad_line', 'no space after PROXY');
  const end = Math.min(bytes.length, PROXY_V1_MAX_LENGTH);
  for (let i = 6; i < end; i++) {
    const c = bytes[i];
    if (c === 0x0a) {
      if (bytes[i - 1] === 0x0d) return i + 1;
      throw new ProxyProtocolError('bad_line', 'LF without CR');
    }
    // Only bytes within the limit are judged, so a split read gives the same answer as a whole
    // one: a CR in the last allowed byte leaves no room for its LF (`too_long` below).
    if (c === 0x0d && i + 1 < end && bytes[i + 1] !== 0x0a) {
      throw new ProxyProtocolError('bad_line', 'CR without LF');
    }
  }
  if (bytes.length >= PROXY_V1_MAX_LENGTH) {
    throw new ProxyProtocolError('too_long', `no CRLF in the first ${PROXY_V1_MAX_LENGTH} bytes`);
  }
  return -1;
}

function parsePort(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) throw new ProxyProtocolError('bad_port', `port "${text}"`);
  const port = Number(text);
  if (port > 65535) throw new ProxyProtocolError('bad_port', `port ${port} over 65535`);
  return port;
}

function parseHost(text: string, v6: boolean): string {
  if (v6) {
    const b = parseIPv6(text);
    if (b === null) throw new ProxyProtocolError('bad_address', `"${text}" is not an IPv6 address`);
    return formatIPv6(b);
  }
  const b = parseIPv4(text);
  if (b === null) throw new ProxyProtocolError('bad_address', `"${text}" is not a canonical IPv4 address`);
  return formatIPv4(b);
}

/**
 * Decodes a complete v1 header at the start of `bytes` (more bytes after it are left alone).
 * Throws a {@link ProxyProtocolError}: `truncated` when `bytes` ends before the CRLF.
 */
export function decodeV1(bytes: Uint8Array): ProxyHeader {
  const length = v1LineLength(bytes);
  if (length < 0) throw new ProxyProtocolError('truncated', 'the line ends before its CRLF');
  let line = '';
  for (let i = 0; i < length - 2; i++) line += String.fromCharCode(bytes[i]!);
  const fields = line.split(' ');
  const proto = fields[1];
  if (proto === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF is found"
    return {
      version: 1,
      command: 'proxy',
      family: 'unspec',
      transport: 'unspec',
      addresses: null,
      tlvs: [],
      length,
    };
  }
  if (proto !== 'TCP4' && proto !== 'TCP6') {
    throw new ProxyProtocolError('bad_family', `protocol "${proto ?? ''}" (TCP4, TCP6 or UNKNOWN)`);
  }
  if (fields.length !== 6 || fields.some((f) => f === '')) {
    throw new ProxyProtocolError('bad_line', 'not six fields separated by single spaces');
  }
  const v6 = proto === 'TCP6';
  const source = { host: parseHost(fields[2]!, v6), port: parsePort(fields[4]!) };
  const destination = { host: parseHost(fields[3]!, v6), port: parsePort(fields[5]!) };
  return {
    version: 1,
    command: 'proxy',
    family: v6 ? 'inet6' : 'inet',
    transport: 'stream',
    addresses: { family: v6 ? 'inet6' : 'inet', source, destination },
    tlvs: [],
    length,
  };
}

/**
 * Encodes a v1 line. `addresses: null` (or a LOCAL command) sends `PROXY UNKNOWN`. Throws a
 * `RangeError` for what v1 cannot say: UNIX addresses, datagrams, TLVs, bad addresses or ports.
 */
export function encodeV1(init: ProxyHeaderInit): Uint8Array {
  const a = init.command === 'local' ? null : init.addresses;
  if ((init.tlvs ?? []).length > 0) throw new RangeError('PROXY v1 cannot carry TLVs');
  if (a === null) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  if (a.family === 'unix') throw new RangeError('PROXY v1 cannot carry UNIX addresses');
  if ((init.transport ?? 'stream') !== 'stream') throw new RangeError('PROXY v1 can only say TCP');
  const v6 = a.family === 'inet6';
  const host = (h: string) => {
    try {
      return parseHost(h, v6);
    } catch {
      // Boundary: a caller's bad address is a RangeError, not a peer's protocol error.
      throw new RangeError(`"${h}" is not an ${v6 ? 'IPv6' : 'IPv4'} address`);
    }
  };
  const port = (p: number) => {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`port ${p} is out of range`);
    return p;
  };
  const line =
    `PROXY ${v6 ? 'TCP6' : 'TCP4'} ${host(a.source.host)} ${host(a.destination.host)} ` +
    `${port(a.source.port)} ${port(a.destination.port)}\r\n`;
  return Buffer.from(line, 'latin1');
}
