/**
 * PROXY protocol version 2, the binary header: a 16-byte fixed part (signature, version and
 * command, family and transport, length), the address block of the family, then TLVs.
 *
 * Ordering rule of the checks, so a failure names the first thing wrong: signature, version,
 * command, family and transport, the length against the limit (decided from the fixed part
 * alone, before a byte more is buffered), then the address block, the TLVs, and the CRC32C.
 */
import { crc32c } from './crc32c.ts';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip.ts';
import { concatBytes, decodeTlvs, encodeTlv } from './tlv.ts';
import {
  PROXY_V2_ABSOLUTE_MAX_LENGTH,
  PROXY_V2_DEFAULT_MAX_LENGTH,
  PROXY_V2_FIXED_LENGTH,
  PROXY_V2_SIGNATURE,
  type ProxyAddresses,
  type ProxyCommand,
  type ProxyFamily,
  type ProxyHeader,
  type ProxyHeaderInit,
  ProxyProtocolError,
  type ProxyTlv,
  type ProxyTransport,
} from './types.ts';

/** Address block sizes by family: IPv4 (2×4 + 2×2), IPv6 (2×16 + 2×2), UNIX (2×108). */
const ADDRESS_LENGTH: Readonly<Record<ProxyFamily, number>> = { unspec: 0, inet: 12, inet6: 36, unix: 216 };
const FAMILIES: readonly ProxyFamily[] = ['unspec', 'inet', 'inet6', 'unix'];
const TRANSPORTS: readonly ProxyTransport[] = ['unspec', 'stream', 'dgram'];
/** The protocol bytes the specification lists; any other combination is refused. */
const VALID_FAMILY_BYTES = new Set([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
const UNIX_PATH_LENGTH = 108;

/** Options of the v2 decoder. */
export interface V2DecodeOptions {
  /** Largest header accepted, fixed part included. Default 4096; at most 65551. */
  readonly maxLength?: number;
}

/** The fields of the fixed part, once checked. */
interface FixedPart {
  readonly command: ProxyCommand;
  readonly family: ProxyFamily;
  readonly transport: ProxyTransport;
  /** The whole header's length: 16 + the length field. */
  readonly total: number;
}

/**
 * Checks the signature bytes present so far (a prefix is enough), so a stream that is not
 * PROXY v2 is refused on its first bytes rather than after 16.
 */
export function checkV2SignaturePrefix(bytes: Uint8Array): void {
  const n = Math.min(bytes.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < n; i++) {
    if (bytes[i] !== PROXY_V2_SIGNATURE[i])
      throw new ProxyProtocolError('bad_signature', 'not a v2 signature');
  }
}

/** Checks the 16-byte fixed part; throws the first reason that applies. */
export function decodeV2Fixed(bytes: Uint8Array, maxLength = PROXY_V2_DEFAULT_MAX_LENGTH): FixedPart {
  // The signature first, as far as it came: short input that does not start it (a datagram
  // without a header, or none at all) has no header to cut short, so it is `bad_signature`.
  checkV2SignaturePrefix(bytes);
  if (bytes.length === 0) throw new ProxyProtocolError('bad_signature', 'empty: no v2 signature');
  if (bytes.length < PROXY_V2_FIXED_LENGTH)
    throw new ProxyProtocolError('truncated', 'shorter than 16 bytes');
  const verCmd = bytes[12]!;
  if (verCmd >> 4 !== 2) throw new ProxyProtocolError('bad_version', `version ${verCmd >> 4} (must be 2)`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw new ProxyProtocolError('bad_command', `command 0x${cmd.toString(16)}`);
  const fam = bytes[13]!;
  if (!VALID_FAMILY_BYTES.has(fam)) {
    throw new ProxyProtocolError('bad_family', `family and transport byte 0x${fam.toString(16)}`);
  }
  const total = PROXY_V2_FIXED_LENGTH + ((bytes[14]! << 8) | bytes[15]!);
  const limit = Math.min(maxLength, PROXY_V2_ABSOLUTE_MAX_LENGTH);
  if (total > limit) throw new ProxyProtocolError('too_long', `header of ${total} bytes (limit ${limit})`);
  return {
    command: cmd === 0 ? 'local' : 'proxy',
    family: FAMILIES[fam >> 4]!,
    transport: TRANSPORTS[fam & 0x0f]!,
    total,
  };
}

function unixPath(bytes: Uint8Array, at: number): string {
  // An abstract socket's name starts with NUL and may contain anything; trailing NULs are padding.
  let end = at + UNIX_PATH_LENGTH;
  if (bytes[at] === 0) {
    while (end > at + 1 && bytes[end - 1] === 0) end--;
    if (end === at + 1) return '';
  } else {
    const nul = bytes.subarray(at, end).indexOf(0);
    if (nul >= 0) end = at + nul;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + at, end - at).toString('utf8');
}

function decodeAddresses(bytes: Uint8Array, family: ProxyFamily): ProxyAddresses | null {
  const a = PROXY_V2_FIXED_LENGTH;
  const port = (at: number) => (bytes[at]! << 8) | bytes[at + 1]!;
  switch (family) {
    case 'inet':
      return {
        family,
        source: { host: formatIPv4(bytes, a), port: port(a + 8) },
        destination: { host: formatIPv4(bytes, a + 4), port: port(a + 10) },
      };
    case 'inet6':
      return {
        family,
        source: { host: formatIPv6(bytes, a), port: port(a + 32) },
        destination: { host: formatIPv6(bytes, a + 16), port: port(a + 34) },
      };
    case 'unix':
      return { family, source: unixPath(bytes, a), destination: unixPath(bytes, a + UNIX_PATH_LENGTH) };
    case 'unspec':
      return null;
  }
}

/**
 * Decodes a complete v2 header at the start of `bytes` (more bytes after it are left alone).
 * Throws a {@link ProxyProtocolError}: `truncated` when `bytes` ends before the header does.
 */
export function decodeV2(bytes: Uint8Array, options: V2DecodeOptions = {}): ProxyHeader {
  const fixed = decodeV2Fixed(bytes, options.maxLength);
  const { command, family, transport, total } = fixed;
  if (bytes.length < total) {
    throw new ProxyProtocolError('truncated', `${bytes.length} of ${total} header bytes`);
  }
  const addrLen = ADDRESS_LENGTH[family];
  const bodyLen = total - PROXY_V2_FIXED_LENGTH;
  let addresses: ProxyAddresses | null = null;
  let tlvStart = PROXY_V2_FIXED_LENGTH + addrLen;
  if (bodyLen < addrLen) {
    // LOCAL must be accepted whatever follows it ("must not assume zero is presented").
    if (command === 'proxy') {
      throw new ProxyProtocolError('bad_length', `length ${bodyLen} below the ${family} address block`);
    }
    tlvStart = total;
  } else if (command === 'proxy') {
    addresses = decodeAddresses(bytes, family);
  }
  let tlvs: readonly ProxyTlv[];
  if (command === 'proxy') tlvs = checkedTlvs(bytes, tlvStart, total);
  else {
    // LOCAL: the receiver discards the protocol block (spec §2.2), as haproxy does whatever it
    // holds; its TLVs are kept only when they read well.
    try {
      tlvs = checkedTlvs(bytes, tlvStart, total);
    } catch {
      tlvs = [];
    }
  }
  return { version: 2, command, family, transport, addresses, tlvs, length: total };
}

/** The TLVs of `bytes` from `start` to `end`, their CRC32C checked if they carry one. */
function checkedTlvs(bytes: Uint8Array, start: number, end: number): readonly ProxyTlv[] {
  const { tlvs, crcAt } = decodeTlvs(bytes, start, end);
  if (crcAt >= 0) {
    const want =
      ((bytes[crcAt]! << 24) | (bytes[crcAt + 1]! << 16) | (bytes[crcAt + 2]! << 8) | bytes[crcAt + 3]!) >>>
      0;
    const got = crc32c(bytes, 0, end, crcAt);
    if (want !== got) {
      throw new ProxyProtocolError(
        'bad_crc',
        `CRC32C 0x${want.toString(16)}, computed 0x${got.toString(16)}`,
      );
    }
  }
  return tlvs;
}

/** Options of {@link encodeV2}. */
export interface V2EncodeOptions {
  /** Append a CRC32C TLV (or fill the one in `tlvs`). Default: false. */
  readonly crc32c?: boolean;
}

function familyOf(addresses: ProxyAddresses | null): ProxyFamily {
  return addresses === null ? 'unspec' : addresses.family;
}

function writeAddresses(out: Uint8Array, addresses: ProxyAddresses): void {
  const a = PROXY_V2_FIXED_LENGTH;
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const ip = (host: string, v6: boolean) => {
    const b = v6 ? parseIPv6(host) : parseIPv4(host);
    if (b === null) throw new RangeError(`"${host}" is not an ${v6 ? 'IPv6' : 'IPv4'} address`);
    return b;
  };
  const port = (p: number) => {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError(`port ${p} is out of range`);
    return p;
  };
  if (addresses.family === 'unix') {
    for (const [i, path] of [addresses.source, addresses.destination].entries()) {
      const b = Buffer.from(path, 'utf8');
      if (b.length > UNIX_PATH_LENGTH) throw new RangeError('UNIX path over 108 bytes');
      out.set(b, a + i * UNIX_PATH_LENGTH);
    }
    return;
  }
  const v6 = addresses.family === 'inet6';
  const size = v6 ? 16 : 4;
  out.set(ip(addresses.source.host, v6), a);
  out.set(ip(addresses.destination.host, v6), a + size);
  view.setUint16(a + 2 * size, port(addresses.source.port));
  view.setUint16(a + 2 * size + 2, port(addresses.destination.port));
}

/**
 * Encodes a v2 header. The family comes from `addresses` (`null` sends UNSPEC); a LOCAL command
 * sends no address block. Throws a `RangeError` on a value the wire cannot carry.
 */
export function encodeV2(init: ProxyHeaderInit, options: V2EncodeOptions = {}): Uint8Array {
  const command = init.command ?? 'proxy';
  const addresses = command === 'local' ? null : init.addresses;
  const family = familyOf(addresses);
  const transport = addresses === null ? 'unspec' : (init.transport ?? 'stream');
  if (family !== 'unspec' && transport === 'unspec') {
    throw new RangeError('a PROXY v2 header with addresses needs transport stream or dgram');
  }
  let tlvs: readonly ProxyTlv[] = init.tlvs ?? [];
  const wantCrc = options.crc32c === true || tlvs.some((t) => t.type === 'crc32c');
  tlvs = tlvs.filter((t) => t.type !== 'crc32c');
  // The CRC TLV goes first (as haproxy sends it) with a zero value, filled in at the end.
  const tlvBytes = [...(wantCrc ? [encodeTlv({ type: 'crc32c', value: 0 })] : []), ...tlvs.map(encodeTlv)];
  const addrLen = ADDRESS_LENGTH[family];
  const body = concatBytes(tlvBytes);
  const total = PROXY_V2_FIXED_LENGTH + addrLen + body.length;
  if (total > PROXY_V2_ABSOLUTE_MAX_LENGTH) throw new RangeError(`header of ${total} bytes is over 65551`);
  const out = new Uint8Array(total);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = 0x20 | (command === 'local' ? 0 : 1);
  out[13] = (FAMILIES.indexOf(family) << 4) | TRANSPORTS.indexOf(transport);
  out[14] = (total - PROXY_V2_FIXED_LENGTH) >> 8;
  out[15] = (total - PROXY_V2_FIXED_LENGTH) & 0xff;
  if (addresses !== null) writeAddresses(out, addresses);
  out.set(body, PROXY_V2_FIXED_LENGTH + addrLen);
  if (wantCrc) {
    const at = PROXY_V2_FIXED_LENGTH + addrLen + 3;
    new DataView(out.buffer).setUint32(at, crc32c(out, 0, total));
  }
  return out;
}
