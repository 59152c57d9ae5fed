/**
 * PROXY protocol (HAProxy's specification, v1 text and v2 binary) and Cloudflare's Simple Proxy
 * Protocol, as sans-IO codecs: bytes in, typed headers out, and back. No socket is touched here;
 * the on-ramp (`onramps/proxy-protocol/`) reads sockets and datagrams with these, and the
 * off-ramp writes headers with {@link encodeProxyHeader}.
 *
 * Every decoder throws only {@link ProxyProtocolError} (code `OXY_ERR_PROXY_PROTOCOL`, with a
 * `reason`) on bad input; the encoders throw `RangeError` on values the wire cannot carry.
 */
import type { ProxyHeaderInit } from './types.ts';
import { encodeV1 } from './v1.ts';
import { encodeV2, type V2EncodeOptions } from './v2.ts';

export { crc32c } from './crc32c.ts';
export {
  type DecodeStep,
  decodeProxyHeader,
  type ProxyDecodeOptions,
  ProxyHeaderDecoder,
} from './decoder.ts';
export { formatSocketAddr } from './ip.ts';
export { decodeSpp, encodeSpp } from './spp.ts';
export { encodeTlv, UNIQUE_ID_MAX_LENGTH } from './tlv.ts';
export * from './types.ts';
export { decodeV1, encodeV1 } from './v1.ts';
export { decodeV2, encodeV2, type V2DecodeOptions, type V2EncodeOptions } from './v2.ts';
export {
  type ProxyHeaderView,
  type ProxySslView,
  type ProxyTlvsView,
  proxyHeaderView,
  proxyTlvsView,
} from './view.ts';

/** Options of {@link encodeProxyHeader}. */
export interface EncodeOptions extends V2EncodeOptions {
  /** Which format to write. */
  readonly version: 1 | 2;
}

/**
 * Encodes a header in the given version (for the off-ramp: a header before the first byte to an
 * upstream). Throws a `RangeError` for what that version cannot carry (v1: UNIX, UDP, TLVs).
 */
export function encodeProxyHeader(init: ProxyHeaderInit, options: EncodeOptions): Uint8Array {
  return options.version === 1 ? encodeV1(init) : encodeV2(init, options);
}
