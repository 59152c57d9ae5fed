/**
 * One error class for Oxy, with a catalogue of stable codes (the fastify habit): callers and
 * tests branch on `code`, never on message text. Every error says which side of the proxy it
 * came from (`source`, as in pingora) and whether trying again could help (`retryable`).
 *
 * The class carries a `Symbol.for` brand so `isOxyError` works across copies of the package
 * (undici's habit); the egress primitives build errors of the same shape.
 *
 * Ordering rule: a code, once published, is never renamed or reused. Add new ones at the end of
 * their group.
 */

const BRAND = Symbol.for('oxy.error');

/** Stable error codes. The comment on each says when it is raised and what the client sees. */
export const OXY_ERR = {
  // --- hooks and apps ---------------------------------------------------------------
  /** An app hook threw or rejected. Fails its own connection or request only (500 or 502). */
  HOOK_FAILED: 'OXY_ERR_HOOK_FAILED',
  /** An app returned a hook object with a method Oxy does not know (a typo, usually). Start-up. */
  INVALID_HOOK: 'OXY_ERR_INVALID_HOOK',
  /** An app definition or its settings are invalid. Start-up. */
  INVALID_APP: 'OXY_ERR_INVALID_APP',
  /** An endpoint could not listen. Start-up; the message names `endpoints.<name>.addr`. */
  LISTEN: 'OXY_ERR_LISTEN',
  /**
   * A hook returned something that is not a decision of its kind (an unknown `kind`, a missing
   * field, a non-address). Handled as the hook throwing: that request or connection fails closed.
   */
  INVALID_DECISION: 'OXY_ERR_INVALID_DECISION',

  // --- ingress -------------------------------------------------------------------------
  /** The client sent a malformed request (→ 400, connection closed). */
  BAD_REQUEST: 'OXY_ERR_BAD_REQUEST',
  /** The request head exceeded the endpoint's `max_header_size` (→ 431). */
  HEADERS_TOO_LARGE: 'OXY_ERR_HEADERS_TOO_LARGE',
  /** The client did not send the request head within `header_read_timeout` (→ 408, closed). */
  HEADER_TIMEOUT: 'OXY_ERR_HEADER_TIMEOUT',
  /** The connection or request was blocked by an app decision (IngressHook, HttpRequestHook). */
  BLOCKED: 'OXY_ERR_BLOCKED',
  /** The client went away before the exchange finished. */
  CLIENT_CLOSED: 'OXY_ERR_CLIENT_CLOSED',
  /**
   * A PROXY protocol (or SPP) header was malformed, too long, late, or came from a peer outside
   * `proxy_protocol.trusted_cidrs`. The error's `reason` says which; the connection is closed (or
   * the datagram dropped) and nothing reaches an upstream.
   */
  PROXY_PROTOCOL: 'OXY_ERR_PROXY_PROTOCOL',
  /** A request body stopped arriving: no piece within `body_read_timeout` (→ 408, closed). */
  BODY_TIMEOUT: 'OXY_ERR_BODY_TIMEOUT',

  // --- egress --------------------------------------------------------------------------
  /** The egress decision or `egress.blocked_cidrs` refused the destination (→ 403). */
  EGRESS_BLOCKED: 'OXY_ERR_EGRESS_BLOCKED',
  /** The name does not exist, or has no address (NXDOMAIN or NODATA). → 502 */
  DNS_NXDOMAIN: 'OXY_ERR_DNS_NXDOMAIN',
  /** No nameserver answered in time. → 504 */
  DNS_TIMEOUT: 'OXY_ERR_DNS_TIMEOUT',
  /** Every nameserver failed (SERVFAIL, REFUSED, malformed answer, socket error). → 502 */
  DNS_FAILED: 'OXY_ERR_DNS_FAILED',
  /** A DNS message could not be parsed. */
  DNS_MALFORMED: 'OXY_ERR_DNS_MALFORMED',
  /** No connection attempt succeeded before the connect timeout. → 504 */
  CONNECT_TIMEOUT: 'OXY_ERR_CONNECT_TIMEOUT',
  /** Every address refused the connection. → 502 */
  CONNECT_REFUSED: 'OXY_ERR_CONNECT_REFUSED',
  /** No route to the host or network. → 502 */
  UNREACHABLE: 'OXY_ERR_UNREACHABLE',
  /** The connection failed for another reason (bad source address, no usable address). → 502 */
  CONNECT_FAILED: 'OXY_ERR_CONNECT_FAILED',
  /** The upstream proxy failed or refused the CONNECT (its status is in `status`). → 502 */
  UPSTREAM_PROXY: 'OXY_ERR_UPSTREAM_PROXY',
  /** The caller's AbortSignal fired before the operation finished. */
  ABORTED: 'OXY_ERR_ABORTED',
  /** The upstream server broke the exchange (reset, malformed response). → 502 */
  UPSTREAM_FAILED: 'OXY_ERR_UPSTREAM_FAILED',
  /**
   * A unit has nowhere to go: a `tcp` or `udp` endpoint without a target, a PROXY header
   * destination, or an egress hook that names one. → 502, or the connection reset.
   */
  NO_TARGET: 'OXY_ERR_NO_TARGET',
  /**
   * TLS to the origin failed: its certificate did not verify (the reason names OpenSSL's code),
   * the handshake failed, or no offered ALPN protocol was chosen. → 502, never a plain-text retry.
   */
  UPSTREAM_TLS: 'OXY_ERR_UPSTREAM_TLS',
  /** The upstream sent no response head within `egress.response_timeout` of the request. → 504 */
  RESPONSE_TIMEOUT: 'OXY_ERR_RESPONSE_TIMEOUT',

  // --- tunnels -------------------------------------------------------------------------
  /** A tunnel saw no bytes either way for its idle timeout. */
  IDLE_TIMEOUT: 'OXY_ERR_IDLE_TIMEOUT',
  /** A tunnel reached its maximum lifetime. */
  MAX_LIFETIME: 'OXY_ERR_MAX_LIFETIME',
  /** The process is draining (restart or shutdown) and the deadline passed. */
  DRAINED: 'OXY_ERR_DRAINED',

  // --- layer 3 (IP packets, flows, NAT, the upgrade namespace) -------------------------
  /** An IP, TCP, UDP, ICMP or GUE packet could not be parsed; the packet is dropped, counted. */
  PACKET_MALFORMED: 'OXY_ERR_PACKET_MALFORMED',
  /** A bounded layer-3 table (flows, NAT slots, fragments) is full and nothing could be evicted. */
  L3_TABLE_FULL: 'OXY_ERR_L3_TABLE_FULL',
  /** The upgrade namespace could not be set up (the message names what the kernel refused). */
  NAMESPACE_FAILED: 'OXY_ERR_NAMESPACE_FAILED',
  /** The upgrade namespace's helper did not answer in time (nothing was refused: the machine was slow or the helper hung). */
  NAMESPACE_TIMEOUT: 'OXY_ERR_NAMESPACE_TIMEOUT',
  /** The IP→TCP upgrade service is not available in this build or could not start. */
  TCP_UPGRADE_UNAVAILABLE: 'OXY_ERR_TCP_UPGRADE_UNAVAILABLE',
  /** An IP tunnel was refused (`IpTunnelHook.handleTunnel` or the ingress hook said block). */
  IP_TUNNEL_REFUSED: 'OXY_ERR_IP_TUNNEL_REFUSED',
  /**
   * `EgressDecision.packets` for a unit that has no way out as packets: not a flow of an IP
   * tunnel, a tunnel without `ip.offramp`, a destination that is not an IP literal (502).
   */
  EGRESS_NO_PACKET_PATH: 'OXY_ERR_EGRESS_NO_PACKET_PATH',

  // --- tooling -------------------------------------------------------------------------
  /** `oxy new` cannot write the starter app (bad name, directory exists, no tarballs). */
  NEW_APP: 'OXY_ERR_NEW_APP',

  // --- TLS interception ------------------------------------------------------------------
  /** The interception CA cannot be loaded or generated. Start-up; names `interception.ca.*`. */
  INTERCEPTION_CA: 'OXY_ERR_INTERCEPTION_CA',
  /** A tunnel's first bytes are not a well-formed TLS ClientHello (garbage, truncated, bad SNI). */
  TLS_CLIENT_HELLO: 'OXY_ERR_TLS_CLIENT_HELLO',

  // --- HTTP/2 field inspection -----------------------------------------------------------
  /** An HPACK header block no encoder may send (RFC 7541): the connection is closed. */
  HPACK_MALFORMED: 'OXY_ERR_HPACK_MALFORMED',

  // --- MASQUE (capsules, CONNECT-UDP, CONNECT-IP) ----------------------------------------
  /** A capsule stream broke the capsule protocol (RFC 9297 §3.3): the stream is aborted. */
  CAPSULE_MALFORMED: 'OXY_ERR_CAPSULE_MALFORMED',
  /** A capsule was longer than the configured maximum: the stream is aborted. */
  CAPSULE_TOO_LARGE: 'OXY_ERR_CAPSULE_TOO_LARGE',
  /** A URI template for CONNECT-UDP or CONNECT-IP breaks RFC 9298 §2 / RFC 9484 §3. Start-up. */
  MASQUE_TEMPLATE: 'OXY_ERR_MASQUE_TEMPLATE',
  /** A MASQUE proxy refused the tunnel (its status and `Proxy-Status` are on the error). */
  MASQUE_REFUSED: 'OXY_ERR_MASQUE_REFUSED',

  // --- bodies (flows/http/body-stage.ts) ---------------------------------------------------
  /**
   * A body went over `max_request_body` (→ 413, upstream request dropped) or `max_response_body`
   * (→ 502 before the response head left, the response cut after). The status is on the error.
   */
  BODY_TOO_LARGE: 'OXY_ERR_BODY_TOO_LARGE',
  /** A body filter stopped the body (`BodyVerdict.stop`); its status and reason are on the error. */
  BODY_STOPPED: 'OXY_ERR_BODY_STOPPED',
} as const;

/** One of the stable `OXY_ERR_*` codes. */
export type OxyErrorCode = (typeof OXY_ERR)[keyof typeof OXY_ERR];

/** Which side of the proxy an error came from. */
export type ErrorSource = 'upstream' | 'downstream' | 'internal';

/** Options of the {@link OxyError} constructor. */
export interface OxyErrorOptions {
  /** Default: `'internal'`. */
  readonly source?: ErrorSource;
  /** Default: `false`. */
  readonly retryable?: boolean;
  readonly cause?: unknown;
  /** An HTTP status tied to the failure: the upstream proxy's answer, or a hook's block status. */
  readonly status?: number;
}

/** An error raised by Oxy. Branch on `code`; `message` is short and safe to show a client. */
export class OxyError extends Error {
  readonly code: OxyErrorCode;
  readonly source: ErrorSource;
  readonly retryable: boolean;
  /** See {@link OxyErrorOptions.status}. */
  readonly status: number | undefined;
  readonly [BRAND] = true;

  constructor(code: OxyErrorCode, message: string, options: OxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OxyError';
    this.code = code;
    this.source = options.source ?? 'internal';
    this.retryable = options.retryable ?? false;
    this.status = options.status;
  }
}

/** True for any `OxyError`, even one from another copy of this package. */
export function isOxyError(e: unknown): e is OxyError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
}

/**
 * The error that a throwing or rejecting hook becomes. A non-Error rejection (`throw 'x'`) is
 * wrapped too (fastify's habit), so logs always have a message and a stack.
 */
export function hookFailed(hook: string, thrown: unknown): OxyError {
  if (isOxyError(thrown) && thrown.code === OXY_ERR.HOOK_FAILED) return thrown;
  const cause = thrown instanceof Error ? thrown : new Error(`non-Error thrown: ${String(thrown)}`);
  // Hooks on the way out (egress, upstream response) fail like an upstream would: 502.
  const outbound = hook.startsWith('EgressHook.') || hook === 'HttpRequestHook.handleResponse';
  return new OxyError(OXY_ERR.HOOK_FAILED, `hook ${hook} failed: ${cause.message}`, {
    source: 'internal',
    cause,
    status: outbound ? 502 : 500,
  });
}

/** Wraps anything thrown into an `OxyError`, keeping an `OxyError` as it is. */
export function toOxyError(e: unknown, code: OxyErrorCode, source: ErrorSource): OxyError {
  if (isOxyError(e)) return e;
  const cause = e instanceof Error ? e : new Error(String(e));
  return new OxyError(code, cause.message, { source, cause });
}

const STATUS_BY_CODE: Readonly<Partial<Record<string, number>>> = {
  OXY_ERR_BAD_REQUEST: 400,
  OXY_ERR_HEADERS_TOO_LARGE: 431,
  OXY_ERR_HEADER_TIMEOUT: 408,
  OXY_ERR_BODY_TIMEOUT: 408,
  OXY_ERR_BLOCKED: 403,
  OXY_ERR_EGRESS_BLOCKED: 403,
  OXY_ERR_DNS_TIMEOUT: 504,
  OXY_ERR_CONNECT_TIMEOUT: 504,
  OXY_ERR_RESPONSE_TIMEOUT: 504,
  OXY_ERR_HOOK_FAILED: 500,
  OXY_ERR_UPSTREAM_TLS: 502,
};

/** Codes whose error carries the status to answer (a block, a failed hook, a stopped body). */
const STATUS_OF_ERROR: ReadonlySet<string> = new Set([
  OXY_ERR.BLOCKED,
  OXY_ERR.HOOK_FAILED,
  OXY_ERR.BODY_TOO_LARGE,
  OXY_ERR.BODY_STOPPED,
]);

/**
 * The HTTP status the proxy answers for an error: the error's own `status` for blocks, the
 * catalogue's status otherwise, and 502 for anything else that went wrong on the way out.
 */
export function httpStatusFor(e: unknown): number {
  if (!isOxyError(e)) return 502;
  if (e.status !== undefined && STATUS_OF_ERROR.has(e.code)) return e.status;
  return STATUS_BY_CODE[e.code] ?? 502;
}

/** A short client-safe reason for an error: hook failures say nothing about the app. */
export function clientReason(e: unknown): string {
  if (!isOxyError(e)) return 'upstream failed';
  if (e.code === OXY_ERR.HOOK_FAILED) return 'internal error';
  return e.message;
}

/**
 * True for a start-up failure caused by a setting (`OXY_ERR_INVALID_APP`, `OXY_ERR_LISTEN`),
 * whose message starts with the key: the CLI shows it as one line and exits 2.
 */
export function isSettingFailure(e: unknown): e is OxyError {
  return isOxyError(e) && (e.code === OXY_ERR.INVALID_APP || e.code === OXY_ERR.LISTEN);
}
