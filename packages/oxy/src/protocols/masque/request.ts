/**
 * The proxy's checks of a MASQUE request (RFC 9298 §3, RFC 9484 §4), as pure functions: given
 * the request head and the endpoint's templates, either the parsed target or the refusal to
 * send (status, `Proxy-Status`), before any socket is opened or any hook runs.
 *
 * Order of checks, each failing with 400 and `error=http_request_error` unless noted:
 * 1. Framing. HTTP/1.1 Upgrade: method `GET`, a `Host`, `Connection` naming `upgrade`, and
 *    `Upgrade` naming `connect-udp` or `connect-ip`. HTTP/2 extended CONNECT: method `CONNECT`,
 *    `:protocol` set, `:authority`, `:scheme` and `:path` non-empty.
 * 2. No content: `Content-Length`, `Content-Type` or `Transfer-Encoding` make a capsule-protocol
 *    message malformed (RFC 9297 §3.2).
 * 3. The endpoint serves the protocol (else 501).
 * 4. The path matches the protocol's template, and its variables validate (`targets.ts`).
 * `Capsule-Protocol: ?1` is read and reported but not required: the upgrade tokens imply the
 * capsule protocol, and RFC 9298/9484 only show the field in examples.
 *
 * Failures after these checks (DNS, blocked destinations, unreachable targets) map to a
 * refusal through `refusalForError`, so every MASQUE answer carries a `Proxy-Status`.
 */

import { isOxyError, OXY_ERR } from '../../errors.ts';
import { formatProxyStatus, type ProxyErrorType, parseCapsuleProtocol } from './proxy-status.ts';
import {
  checkIpProto,
  checkIpTarget,
  checkTargetHost,
  checkTargetPort,
  type IpTarget,
  type TargetHost,
} from './targets.ts';
import { type MasqueProtocol, matchUriTemplate, type UriTemplate } from './template.ts';

/** What the checks read of a request. Header names are lower case (Node's `headers` shape). */
export interface MasqueRequestHead {
  /** `'1.1'` for an Upgrade request, `'2'` for extended CONNECT. */
  readonly httpVersion: '1.1' | '2';
  readonly method: string;
  /** HTTP/2's `:protocol`. Ignored for HTTP/1.1, where the `Upgrade` header names it. */
  readonly protocol?: string | undefined;
  /** `:path`, or HTTP/1.1's request-target (origin form or absolute form). */
  readonly path: string;
  /** HTTP/2's `:scheme`. */
  readonly scheme?: string | undefined;
  /** HTTP/2's `:authority`. */
  readonly authority?: string | undefined;
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** The templates an endpoint serves; a protocol without one is answered 501. */
export interface MasqueEndpointTemplates {
  readonly udp?: UriTemplate | undefined;
  readonly ip?: UriTemplate | undefined;
  /** The proxy's name in `Proxy-Status`. Default `oxy`. */
  readonly proxyName?: string;
}

/** A valid CONNECT-UDP request: where to send the datagrams. */
export interface ConnectUdpRequest {
  readonly kind: 'connect-udp';
  readonly target: TargetHost;
  readonly port: number;
  /** Whether the client sent `Capsule-Protocol: ?1`. */
  readonly capsuleProtocol: boolean;
}

/** A valid CONNECT-IP request: its scope. */
export interface ConnectIpRequest {
  readonly kind: 'connect-ip';
  readonly target: IpTarget;
  readonly ipproto: number | '*';
  readonly capsuleProtocol: boolean;
}

/** The answer to a request the proxy refuses. */
export interface MasqueRefusal {
  readonly status: number;
  readonly error: ProxyErrorType;
  readonly details: string;
  /** The `Proxy-Status` field value. */
  readonly proxyStatus: string;
}

/** The outcome of {@link checkMasqueRequest}. */
export type MasqueCheck =
  | { readonly ok: true; readonly request: ConnectUdpRequest | ConnectIpRequest }
  | { readonly ok: false; readonly refusal: MasqueRefusal };

/** Builds a refusal with its `Proxy-Status`. */
export function masqueRefusal(
  status: number,
  error: ProxyErrorType,
  details: string,
  proxyName = 'oxy',
  extra: { rcode?: string; nextHop?: string } = {},
): MasqueRefusal {
  return {
    status,
    error,
    details,
    proxyStatus: formatProxyStatus({ proxy: proxyName, error, details, ...extra }),
  };
}

function tokens(value: string | readonly string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = typeof value === 'string' ? value : value.join(',');
  return joined
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
}

function single(value: string | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value;
  return value.length === 1 ? value[0] : undefined;
}

/**
 * The MASQUE protocol a request asks for, or `undefined` when it is not a MASQUE request: an
 * on-ramp calls this to route, then {@link checkMasqueRequest} to validate.
 */
export function masqueProtocolOf(
  head: Pick<MasqueRequestHead, 'httpVersion' | 'protocol' | 'headers'>,
): MasqueProtocol | undefined {
  const asked = head.httpVersion === '2' ? [head.protocol?.toLowerCase()] : tokens(head.headers['upgrade']);
  if (asked.includes('connect-udp')) return 'connect-udp';
  if (asked.includes('connect-ip')) return 'connect-ip';
  return undefined;
}

/** Runs the checks described at the top of this module. */
export function checkMasqueRequest(head: MasqueRequestHead, endpoint: MasqueEndpointTemplates): MasqueCheck {
  const name = endpoint.proxyName ?? 'oxy';
  const refuse = (status: number, details: string): MasqueCheck => ({
    ok: false,
    refusal: masqueRefusal(status, 'http_request_error', details, name),
  });
  const protocol = masqueProtocolOf(head);
  if (protocol === undefined) return refuse(400, 'not a connect-udp or connect-ip request');
  let path = head.path;
  if (head.httpVersion === '1.1') {
    if (head.method !== 'GET')
      return refuse(400, `${protocol} over HTTP/1.1 needs method GET, not ${head.method}`);
    const host = single(head.headers['host']);
    if (host === undefined || host === '') return refuse(400, 'a single Host header is required');
    if (!tokens(head.headers['connection']).includes('upgrade')) {
      return refuse(400, 'the Connection header must name "upgrade"');
    }
    // Absolute form (RFC 9298 Figure 3): only the path and query are matched.
    path = path.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/, '');
  } else {
    if (head.method !== 'CONNECT')
      return refuse(400, `extended CONNECT needs method CONNECT, not ${head.method}`);
    if (!head.authority) return refuse(400, ':authority must not be empty');
    if (!head.scheme) return refuse(400, ':scheme must not be empty');
    if (!path) return refuse(400, ':path must not be empty');
  }
  for (const field of ['content-length', 'content-type', 'transfer-encoding']) {
    if (head.headers[field] !== undefined)
      return refuse(400, `a ${protocol} request must not carry ${field}`);
  }
  const capsuleProtocol = parseCapsuleProtocol(head.headers['capsule-protocol']);
  const template = protocol === 'connect-udp' ? endpoint.udp : endpoint.ip;
  if (template === undefined) return refuse(501, `${protocol} is not served on this endpoint`);
  const vars = matchUriTemplate(template, path);
  if (vars === undefined)
    return refuse(400, `the request path does not match the ${protocol} template ${template.source}`);
  if (protocol === 'connect-udp') {
    const host = checkTargetHost(vars['target_host'] ?? '');
    if (!host.ok) return refuse(400, host.reason);
    const port = checkTargetPort(vars['target_port'] ?? '');
    if (!port.ok) return refuse(400, port.reason);
    return {
      ok: true,
      request: { kind: 'connect-udp', target: host.value, port: port.value, capsuleProtocol },
    };
  }
  const target = checkIpTarget(vars['target']);
  if (!target.ok) return refuse(400, target.reason);
  const ipproto = checkIpProto(vars['ipproto']);
  if (!ipproto.ok) return refuse(400, ipproto.reason);
  return {
    ok: true,
    request: { kind: 'connect-ip', target: target.value, ipproto: ipproto.value, capsuleProtocol },
  };
}

/**
 * The refusal for a failure after the checks: resolving, egress policy or reaching the target.
 * `nextHop` (`host:port`) goes into `Proxy-Status`. Unknown errors are 502
 * `proxy_internal_error`; a hook's block keeps the hook's status.
 */
export function refusalForError(e: unknown, proxyName = 'oxy', nextHop?: string): MasqueRefusal {
  const msg = e instanceof Error ? e.message : String(e);
  const hop = nextHop === undefined ? {} : { nextHop };
  if (!isOxyError(e)) return masqueRefusal(502, 'proxy_internal_error', msg, proxyName, hop);
  switch (e.code) {
    case OXY_ERR.EGRESS_BLOCKED:
      return masqueRefusal(403, 'destination_ip_prohibited', msg, proxyName, hop);
    case OXY_ERR.BLOCKED:
      return masqueRefusal(e.status ?? 403, 'http_request_denied', msg, proxyName, hop);
    case OXY_ERR.DNS_NXDOMAIN:
      return masqueRefusal(502, 'dns_error', msg, proxyName, { ...hop, rcode: 'NXDOMAIN' });
    case OXY_ERR.DNS_FAILED:
    case OXY_ERR.DNS_MALFORMED:
      return masqueRefusal(502, 'dns_error', msg, proxyName, hop);
    case OXY_ERR.DNS_TIMEOUT:
      return masqueRefusal(504, 'dns_timeout', msg, proxyName, hop);
    case OXY_ERR.CONNECT_REFUSED:
      return masqueRefusal(502, 'connection_refused', msg, proxyName, hop);
    case OXY_ERR.CONNECT_TIMEOUT:
      return masqueRefusal(504, 'connection_timeout', msg, proxyName, hop);
    case OXY_ERR.UNREACHABLE:
      return masqueRefusal(502, 'destination_ip_unroutable', msg, proxyName, hop);
    case OXY_ERR.CONNECT_FAILED:
      return masqueRefusal(502, 'destination_unavailable', msg, proxyName, hop);
    case OXY_ERR.HOOK_FAILED:
      return masqueRefusal(e.status ?? 500, 'proxy_internal_error', msg, proxyName, hop);
    default:
      return masqueRefusal(502, 'proxy_internal_error', msg, proxyName, hop);
  }
}

/**
 * The success answer's status and headers: HTTP/1.1 `101` with `Connection`, `Upgrade` and
 * `Capsule-Protocol`; HTTP/2 `200` with `capsule-protocol` (lower case, as HTTP/2 requires).
 */
export function masqueSuccess(
  protocol: MasqueProtocol,
  httpVersion: '1.1' | '2',
): { readonly status: number; readonly headers: Readonly<Record<string, string>> } {
  if (httpVersion === '1.1') {
    return { status: 101, headers: { Connection: 'Upgrade', Upgrade: protocol, 'Capsule-Protocol': '?1' } };
  }
  return { status: 200, headers: { 'capsule-protocol': '?1' } };
}
