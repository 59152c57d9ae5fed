/**
 * The TLVs (type, 16-bit length, value) after a PROXY v2 header's addresses: decoding into typed
 * {@link ProxyTlv}s and encoding back. Every registered type is checked against its definition
 * (CRC32C is exactly 4 bytes, UNIQUE_ID at most 128, SSL at least 5 with well-formed sub-TLVs,
 * text in its encoding); anything else is refused as `bad_tlv`. Unregistered types are kept as
 * bytes. The CRC itself is checked by the v2 decoder, which knows the whole header.
 */
import { PP2_TYPE, ProxyProtocolError, type ProxyRawTlv, type ProxySslTlv, type ProxyTlv } from './types.ts';

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const UTF8_ENCODER = new TextEncoder();

/** Largest UNIQUE_ID value the specification allows. */
export const UNIQUE_ID_MAX_LENGTH = 128;

function bad(message: string): ProxyProtocolError {
  return new ProxyProtocolError('bad_tlv', message);
}

/** A copy of `bytes[start, end)` as a plain Uint8Array (`Buffer#slice` would be a view). */
export function copyBytes(bytes: Uint8Array, start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  out.set(bytes.subarray(start, end));
  return out;
}

function latin1(bytes: Uint8Array, start: number, end: number): string {
  let out = '';
  for (let i = start; i < end; i++) out += String.fromCharCode(bytes[i]!);
  return out;
}

function ascii(bytes: Uint8Array, start: number, end: number, what: string): string {
  for (let i = start; i < end; i++) if (bytes[i]! > 0x7f) throw bad(`${what} is not US-ASCII`);
  return latin1(bytes, start, end);
}

function utf8(bytes: Uint8Array, start: number, end: number, what: string): string {
  try {
    return UTF8.decode(bytes.subarray(start, end));
  } catch {
    // Boundary: TextDecoder's TypeError becomes our typed error.
    throw bad(`${what} is not UTF-8`);
  }
}

/** Where the CRC32C value sits in the header (for the v2 decoder's check), or -1. */
export interface DecodedTlvs {
  readonly tlvs: ProxyTlv[];
  readonly crcAt: number;
}

/** Decodes the TLVs in `bytes[start, end)`. Throws `bad_tlv` on anything malformed. */
export function decodeTlvs(bytes: Uint8Array, start: number, end: number): DecodedTlvs {
  const tlvs: ProxyTlv[] = [];
  let crcAt = -1;
  let at = start;
  while (at < end) {
    if (end - at < 3) throw bad(`${end - at} stray bytes after the last TLV`);
    const code = bytes[at]!;
    const len = (bytes[at + 1]! << 8) | bytes[at + 2]!;
    const v = at + 3;
    if (v + len > end) throw bad(`TLV 0x${code.toString(16)} of ${len} bytes overruns the header`);
    const ve = v + len;
    switch (code) {
      case PP2_TYPE.ALPN:
        tlvs.push({ type: 'alpn', value: latin1(bytes, v, ve) });
        break;
      case PP2_TYPE.AUTHORITY:
        tlvs.push({ type: 'authority', value: utf8(bytes, v, ve, 'AUTHORITY') });
        break;
      case PP2_TYPE.CRC32C: {
        if (len !== 4) throw bad(`CRC32C value of ${len} bytes (must be 4)`);
        if (crcAt >= 0) throw bad('two CRC32C TLVs');
        crcAt = v;
        const value =
          ((bytes[v]! << 24) | (bytes[v + 1]! << 16) | (bytes[v + 2]! << 8) | bytes[v + 3]!) >>> 0;
        tlvs.push({ type: 'crc32c', value });
        break;
      }
      case PP2_TYPE.NOOP:
        tlvs.push({ type: 'noop', value: copyBytes(bytes, v, ve) });
        break;
      case PP2_TYPE.UNIQUE_ID:
        if (len > UNIQUE_ID_MAX_LENGTH) throw bad(`UNIQUE_ID of ${len} bytes (at most 128)`);
        tlvs.push({ type: 'unique_id', value: copyBytes(bytes, v, ve) });
        break;
      case PP2_TYPE.SSL:
        tlvs.push(decodeSsl(bytes, v, ve));
        break;
      case PP2_TYPE.NETNS:
        tlvs.push({ type: 'netns', value: ascii(bytes, v, ve, 'NETNS') });
        break;
      default:
        tlvs.push({ type: 'unknown', code, value: copyBytes(bytes, v, ve) });
    }
    at = ve;
  }
  return { tlvs, crcAt };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const SSL_TEXT: Readonly<Record<number, readonly [keyof ProxySslTlv, 'ascii' | 'utf8']>> = {
  [PP2_TYPE.SSL_VERSION]: ['version', 'ascii'],
  [PP2_TYPE.SSL_CN]: ['cn', 'utf8'],
  [PP2_TYPE.SSL_CIPHER]: ['cipher', 'ascii'],
  [PP2_TYPE.SSL_SIG_ALG]: ['sigAlg', 'ascii'],
  [PP2_TYPE.SSL_KEY_ALG]: ['keyAlg', 'ascii'],
  [PP2_TYPE.SSL_GROUP]: ['group', 'ascii'],
  [PP2_TYPE.SSL_SIG_SCHEME]: ['sigScheme', 'ascii'],
};

function decodeSsl(bytes: Uint8Array, start: number, end: number): ProxySslTlv {
  if (end - start < 5) throw bad(`SSL TLV of ${end - start} bytes (at least 5)`);
  const unknown: ProxyRawTlv[] = [];
  const ssl: Mutable<ProxySslTlv> = {
    type: 'ssl',
    client: bytes[start]!,
    verify:
      ((bytes[start + 1]! << 24) |
        (bytes[start + 2]! << 16) |
        (bytes[start + 3]! << 8) |
        bytes[start + 4]!) >>>
      0,
    unknown,
  };
  let at = start + 5;
  while (at < end) {
    if (end - at < 3) throw bad('stray bytes after the last SSL sub-TLV');
    const code = bytes[at]!;
    const len = (bytes[at + 1]! << 8) | bytes[at + 2]!;
    const v = at + 3;
    if (v + len > end) throw bad(`SSL sub-TLV 0x${code.toString(16)} overruns the SSL TLV`);
    const text = SSL_TEXT[code];
    if (text !== undefined) {
      const [key, enc] = text;
      if (ssl[key] !== undefined) throw bad(`two SSL sub-TLVs 0x${code.toString(16)}`);
      const what = `SSL sub-TLV ${key}`;
      (ssl as Record<string, unknown>)[key] =
        enc === 'ascii' ? ascii(bytes, v, v + len, what) : utf8(bytes, v, v + len, what);
    } else if (code === PP2_TYPE.SSL_CLIENT_CERT) {
      if (ssl.clientCert !== undefined) throw bad('two SSL client certificates');
      ssl.clientCert = copyBytes(bytes, v, v + len);
    } else {
      unknown.push({ code, value: copyBytes(bytes, v, v + len) });
    }
    at = v + len;
  }
  return ssl;
}

/** The bytes of one TLV (type, length, value). Throws a `RangeError` above 65535 bytes. */
function tlvBytes(code: number, value: Uint8Array): Uint8Array {
  if (value.length > 0xffff) throw new RangeError(`TLV 0x${code.toString(16)} value over 65535 bytes`);
  const out = new Uint8Array(3 + value.length);
  out[0] = code;
  out[1] = value.length >> 8;
  out[2] = value.length & 0xff;
  out.set(value, 3);
  return out;
}

function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError('ALPN text must be Latin-1 (one byte per character)');
    out[i] = c;
  }
  return out;
}

function asciiBytes(text: string, what: string): Uint8Array {
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) throw new RangeError(`${what} must be US-ASCII`);
  }
  return latin1Bytes(text);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function encodeSsl(ssl: ProxySslTlv): Uint8Array {
  const head = new Uint8Array(5);
  head[0] = ssl.client;
  new DataView(head.buffer).setUint32(1, ssl.verify >>> 0);
  const parts: Uint8Array[] = [head];
  for (const [code, [key, enc]] of Object.entries(SSL_TEXT)) {
    const value = ssl[key];
    if (typeof value !== 'string') continue;
    parts.push(
      tlvBytes(Number(code), enc === 'ascii' ? asciiBytes(value, `SSL ${key}`) : UTF8_ENCODER.encode(value)),
    );
  }
  if (ssl.clientCert !== undefined) parts.push(tlvBytes(PP2_TYPE.SSL_CLIENT_CERT, ssl.clientCert));
  for (const u of ssl.unknown) parts.push(tlvBytes(u.code, u.value));
  return tlvBytes(PP2_TYPE.SSL, concat(parts));
}

/**
 * Encodes one TLV. Throws a `RangeError` for a value the wire cannot carry (too long, text out
 * of its encoding, a UNIQUE_ID over 128 bytes).
 */
export function encodeTlv(tlv: ProxyTlv): Uint8Array {
  switch (tlv.type) {
    case 'alpn':
      return tlvBytes(PP2_TYPE.ALPN, latin1Bytes(tlv.value));
    case 'authority':
      return tlvBytes(PP2_TYPE.AUTHORITY, UTF8_ENCODER.encode(tlv.value));
    case 'crc32c': {
      const v = new Uint8Array(4);
      new DataView(v.buffer).setUint32(0, tlv.value >>> 0);
      return tlvBytes(PP2_TYPE.CRC32C, v);
    }
    case 'noop':
      return tlvBytes(PP2_TYPE.NOOP, tlv.value);
    case 'unique_id':
      if (tlv.value.length > UNIQUE_ID_MAX_LENGTH) throw new RangeError('UNIQUE_ID over 128 bytes');
      return tlvBytes(PP2_TYPE.UNIQUE_ID, tlv.value);
    case 'ssl':
      return encodeSsl(tlv);
    case 'netns':
      return tlvBytes(PP2_TYPE.NETNS, asciiBytes(tlv.value, 'NETNS'));
    case 'unknown':
      if (!Number.isInteger(tlv.code) || tlv.code < 0 || tlv.code > 0xff) {
        throw new RangeError(`TLV type ${tlv.code} is not a byte`);
      }
      return tlvBytes(tlv.code, tlv.value);
  }
}

/** Joins byte arrays (shared by the encoders). */
export { concat as concatBytes };
