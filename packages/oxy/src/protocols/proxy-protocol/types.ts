/**
 * The data model of a PROXY protocol header (HAProxy's specification, versions 1 and 2) and of
 * Cloudflare's Simple Proxy Protocol (SPP) header, shared by the decoders, the encoders, the
 * on-ramp and the hooks; and the one error the codecs throw, with a stable reason per failure.
 *
 * Ordering rule: a reason, once published, is never renamed; metrics and audit records carry it
 * as a label. Add new reasons at the end of `PROXY_REASONS`.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';

/** The 12-byte signature that opens every version 2 header. */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);

/** The longest version 1 line, CRLF included ("if the CRLF is not found in the first 107 characters"). */
export const PROXY_V1_MAX_LENGTH = 107;
/** The fixed part of a version 2 header: signature, version and command, family, length. */
export const PROXY_V2_FIXED_LENGTH = 16;
/** The default largest version 2 header accepted (fixed part, addresses and TLVs). */
export const PROXY_V2_DEFAULT_MAX_LENGTH = 4096;
/** The largest version 2 header the format can describe (a 16-bit length). */
export const PROXY_V2_ABSOLUTE_MAX_LENGTH = PROXY_V2_FIXED_LENGTH + 0xffff;
/** SPP's magic number, the first two bytes of its header. */
export const SPP_MAGIC = 0x56ec;
/** SPP's fixed header length. */
export const SPP_HEADER_LENGTH = 38;

/**
 * Why a header was refused. The codec raises the first eleven; the on-ramp adds `untrusted`
 * (the peer is outside `trusted_cidrs`) and `timeout` (no complete header in `header_timeout`).
 */
export const PROXY_REASONS = [
  /** Neither the v1 `PROXY ` prefix nor the v2 signature (nor SPP's magic). */
  'bad_signature',
  /** A v2 header whose version nibble is not 2. */
  'bad_version',
  /** A v2 command other than LOCAL (0) or PROXY (1). */
  'bad_command',
  /** An unknown v2 family or transport, or a v1 protocol other than TCP4, TCP6, UNKNOWN. */
  'bad_family',
  /** An address that is not in the canonical form of its family. */
  'bad_address',
  /** A v1 port that is not a decimal in 0..65535 without a leading zero. */
  'bad_port',
  /** A v1 line that is not exactly fields separated by single spaces and ended by CRLF. */
  'bad_line',
  /** A v2 length too short for the family's address block. */
  'bad_length',
  /** Longer than the limit (107 bytes for v1, the configured maximum for v2). */
  'too_long',
  /** A CRC32C TLV that does not match the header. */
  'bad_crc',
  /** A TLV that overruns the header, or a registered TLV whose value is malformed. */
  'bad_tlv',
  /** The input ended before the header did (a short datagram, or a stream closed mid-header). */
  'truncated',
  /** The peer is not in `trusted_cidrs`: closed at once, whatever it sends. */
  'untrusted',
  /** No complete header within `header_timeout`. */
  'timeout',
] as const;

/** One of {@link PROXY_REASONS}. */
export type ProxyReason = (typeof PROXY_REASONS)[number];

/**
 * A refused header: an `OxyError` with code `OXY_ERR_PROXY_PROTOCOL` and the {@link ProxyReason}.
 * The codecs throw nothing else on any input.
 */
export class ProxyProtocolError extends OxyError {
  /** Why the header was refused; the `reason` label of `proxy_protocol_rejected_total`. */
  readonly reason: ProxyReason;

  constructor(reason: ProxyReason, message: string) {
    // No stack: a malformed header is a peer's input, not a bug here, and capturing a stack was
    // most of the cost of refusing one (a flood of bad headers must stay cheap).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(OXY_ERR.PROXY_PROTOCOL, `PROXY protocol: ${reason}: ${message}`, { source: 'downstream' });
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.reason = reason;
  }
}

/** True for a {@link ProxyProtocolError}. */
export function isProxyProtocolError(e: unknown): e is ProxyProtocolError {
  return e instanceof ProxyProtocolError;
}

/** Which format a header came in: PROXY v1 (text), v2 (binary), or SPP. */
export type ProxyVersion = 1 | 2 | 'spp';
/** `local`: the proxy's own connection (health check), use the socket's addresses. `proxy`: relayed. */
export type ProxyCommand = 'local' | 'proxy';
/** The address family of the relayed connection. */
export type ProxyFamily = 'inet' | 'inet6' | 'unix' | 'unspec';
/** The transport of the relayed connection: `stream` (TCP, UNIX stream), `dgram` (UDP, UNIX dgram). */
export type ProxyTransport = 'stream' | 'dgram' | 'unspec';

/**
 * The relayed connection's endpoints. IP hosts are in Node's textual form (IPv6 compressed,
 * lower case; an IPv4-mapped v6 address as `::ffff:a.b.c.d`). A UNIX path is the bytes before
 * the first NUL; an abstract socket's name starts with `\0`.
 */
export type ProxyAddresses =
  | { readonly family: 'inet' | 'inet6'; readonly source: SocketAddr; readonly destination: SocketAddr }
  | { readonly family: 'unix'; readonly source: string; readonly destination: string };

/** Bits of the SSL TLV's `client` field. */
export const PP2_CLIENT = {
  /** The client connected over SSL/TLS. */
  SSL: 0x01,
  /** The client presented a certificate on this connection. */
  CERT_CONN: 0x02,
  /** The client presented a certificate at least once in this TLS session. */
  CERT_SESS: 0x04,
} as const;

/** The registered TLV type codes (and SSL sub-TLV codes). */
export const PP2_TYPE = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  SSL_GROUP: 0x26,
  SSL_SIG_SCHEME: 0x27,
  SSL_CLIENT_CERT: 0x28,
  NETNS: 0x30,
} as const;

/** A TLV whose type Oxy does not interpret, kept as bytes. */
export interface ProxyRawTlv {
  readonly code: number;
  readonly value: Uint8Array;
}

/**
 * The SSL TLV (0x20): what the sending proxy knew of the client's TLS. `verify` is 0 when the
 * client presented a certificate that verified, and also (haproxy) when it presented none:
 * check `client` for {@link PP2_CLIENT}`.CERT_CONN` too. The strings are the sub-TLVs, `undefined` when
 * absent; sub-TLVs of unknown types are kept in `unknown`.
 */
export interface ProxySslTlv {
  readonly type: 'ssl';
  /** Bit field of {@link PP2_CLIENT}. */
  readonly client: number;
  readonly verify: number;
  /** `SSL_VERSION` (0x21), e.g. `TLSv1.3`. */
  readonly version?: string | undefined;
  /** `SSL_CN` (0x22), the client certificate's Common Name (UTF-8). */
  readonly cn?: string | undefined;
  /** `SSL_CIPHER` (0x23), e.g. `TLS_AES_256_GCM_SHA384`. */
  readonly cipher?: string | undefined;
  /** `SSL_SIG_ALG` (0x24), the frontend certificate's signature algorithm. */
  readonly sigAlg?: string | undefined;
  /** `SSL_KEY_ALG` (0x25), the frontend certificate's key algorithm, e.g. `RSA2048`. */
  readonly keyAlg?: string | undefined;
  /** `SSL_GROUP` (0x26), the key exchange group, e.g. `secp256r1`. */
  readonly group?: string | undefined;
  /** `SSL_SIG_SCHEME` (0x27), e.g. `rsa_pss_rsae_sha256`. */
  readonly sigScheme?: string | undefined;
  /** `SSL_CLIENT_CERT` (0x28), the client certificate in DER. */
  readonly clientCert?: Uint8Array | undefined;
  readonly unknown: readonly ProxyRawTlv[];
}

/**
 * One TLV of a version 2 header, typed by its registered meaning. ALPN is kept as Latin-1 text
 * (each byte one character, so nothing is lost); AUTHORITY is UTF-8; NETNS is US-ASCII.
 */
export type ProxyTlv =
  | { readonly type: 'alpn'; readonly value: string }
  | { readonly type: 'authority'; readonly value: string }
  | { readonly type: 'crc32c'; readonly value: number }
  | { readonly type: 'noop'; readonly value: Uint8Array }
  | { readonly type: 'unique_id'; readonly value: Uint8Array }
  | ProxySslTlv
  | { readonly type: 'netns'; readonly value: string }
  | ({ readonly type: 'unknown' } & ProxyRawTlv);

/** A decoded header. */
export interface ProxyHeader {
  readonly version: ProxyVersion;
  readonly command: ProxyCommand;
  readonly family: ProxyFamily;
  readonly transport: ProxyTransport;
  /**
   * The relayed endpoints, or `null` when the socket's own addresses apply: a LOCAL command, an
   * UNSPEC family, or a v1 `UNKNOWN` line.
   */
  readonly addresses: ProxyAddresses | null;
  /** The TLVs in wire order (v2 only; empty for v1 and SPP). */
  readonly tlvs: readonly ProxyTlv[];
  /** The header's length on the wire, in bytes. */
  readonly length: number;
}

/** What the encoders take: a header without the parts they derive (family, length). */
export interface ProxyHeaderInit {
  /** Default: `proxy`. */
  readonly command?: ProxyCommand;
  /** Default: `stream`. v1 can only say TCP (stream). */
  readonly transport?: ProxyTransport;
  /** `null` sends UNSPEC (v2) or `UNKNOWN` (v1). */
  readonly addresses: ProxyAddresses | null;
  /** v2 only. A `crc32c` TLV here is recomputed; see also the encoder's `crc32c` option. */
  readonly tlvs?: readonly ProxyTlv[];
}
