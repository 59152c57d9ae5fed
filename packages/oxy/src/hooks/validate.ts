/**
 * Checks what decision-returning hooks return, in one place, so a decision the framework does
 * not know fails closed. TypeScript stops most mistakes, but plain JavaScript apps, casts and
 * `as never` do not go through it: an unknown `kind` must not be read as "allow" by one call
 * site and hang the request at another.
 *
 * `resolveHooks` wraps each present decision hook with {@link checked} at start-up. A value that
 * is not a decision of the hook's kind becomes a thrown `OXY_ERR_INVALID_DECISION`, so every
 * call site handles it exactly as it handles a throwing hook: that connection or request only
 * fails (500, or 502 for hooks on the way out), logged once with the connection's fields and
 * counted in `hooks_failures_total`.
 *
 * The one exception is a hook whose normal return is not a decision but that may block:
 * `handleUpstreamIps` and `dnsResolveOverride` may return `EgressDecision.block(reason)`. That
 * becomes a thrown `OXY_ERR_EGRESS_BLOCKED` with the app's reason, which the runtime passes on
 * as the block it is (403 with the reason), not as a failure.
 *
 * Ordering rule: a synchronous hook stays synchronous (the check runs on the value); a promise
 * is checked when it settles.
 */
import net from 'node:net';
import { OXY_ERR, OxyError } from '../errors.ts';
import { encodeProxyHeader } from '../protocols/proxy-protocol/index.ts';

/** Returns `null` for a valid value, or a short text saying what was expected. */
type Check = (value: unknown) => string | null;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

const isStatus = (v: unknown, min: number): boolean =>
  Number.isInteger(v) && (v as number) >= min && (v as number) <= 599;
const isReason = (v: unknown): boolean => typeof v === 'string';

function isBlock(v: unknown, withStatus: boolean): boolean {
  if (!isObject(v) || v.kind !== 'block' || !isReason(v.reason)) return false;
  return !withStatus || isStatus(v.status, 400);
}

function isAddr(v: unknown): boolean {
  return isObject(v) && typeof v.host === 'string' && v.host !== '' && isStatusPort(v.port);
}

function isStatusPort(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
}

function isIpList(v: unknown): boolean {
  return Array.isArray(v) && v.every((ip) => typeof ip === 'string' && net.isIP(ip) !== 0);
}

const ingressDecision: Check = (v) =>
  (isObject(v) && v.kind === 'allow') || isBlock(v, false)
    ? null
    : 'an IngressDecision (allow, or block with a reason)';

const connectDirective: Check = (v) =>
  (isObject(v) && v.kind === 'allow') || isBlock(v, true)
    ? null
    : 'a ConnectDirective (allow, or block with a 4xx/5xx status and a reason)';

function isBody(v: unknown): boolean {
  return v === undefined || typeof v === 'string' || v instanceof Uint8Array;
}

const requestDecision: Check = (v) => {
  if (isObject(v) && v.kind === 'forward') return null;
  if (isBlock(v, true)) return null;
  if (
    isObject(v) &&
    v.kind === 'respond' &&
    isStatus(v.status, 200) &&
    isBody(v.body) &&
    (v.headers === undefined || isObject(v.headers))
  )
    return null;
  return 'a RequestDecision (forward, respond with a status, or block with a 4xx/5xx status and a reason)';
};

const responseHead: Check = (v) =>
  v === undefined || (isObject(v) && isStatus(v.status, 100) && isObject(v.headers))
    ? null
    : 'a ResponseHead (a status and headers) or undefined';

/** A body filter is chosen synchronously (its own methods may be async): see `hooks/http-body.ts`. */
const bodyFilterOrNothing: Check = (v) =>
  v === undefined ||
  (isObject(v) &&
    typeof v.then !== 'function' &&
    (v.onChunk === undefined || typeof v.onChunk === 'function') &&
    (v.onEnd === undefined || typeof v.onEnd === 'function') &&
    (v.onAbort === undefined || typeof v.onAbort === 'function'))
    ? null
    : 'a BodyFilter (an object with onChunk, onEnd, onAbort methods, returned synchronously) or undefined';

/** `EgressDecision.direct` options: none, or a PROXY header of version 1 (no TLVs, no CRC) or 2. */
const directOptions = (o: unknown): boolean => {
  if (o === undefined) return true;
  if (!isObject(o)) return false;
  const pp = o.proxyProtocol;
  if (pp === undefined) return true;
  if (!isObject(pp)) return false;
  if (pp.version === 1) return pp.tlvs === undefined && (pp.crc32c === undefined || pp.crc32c === false);
  if (
    pp.version !== 2 ||
    !(pp.tlvs === undefined || Array.isArray(pp.tlvs)) ||
    !(pp.crc32c === undefined || typeof pp.crc32c === 'boolean')
  )
    return false;
  return pp.tlvs === undefined || pp.tlvs.length === 0 || tlvsEncode(pp.tlvs);
};

/** The largest address block an outgoing header has (TCP6), for {@link tlvsEncode}. */
const V6_PAIR = {
  family: 'inet6',
  source: { host: '::', port: 0 },
  destination: { host: '::', port: 0 },
} as const;

/**
 * Whether `tlvs` can go out in a v2 header: each a TLV the encoder knows, with a value the wire
 * carries, and all of them within the header's 64 KiB beside the largest address block. Checked
 * here, with the decision, so a TLV that cannot be written fails the hook (logged and counted)
 * rather than the encoder throwing later, after the upstream connect, where nothing reports it.
 */
function tlvsEncode(tlvs: unknown[]): boolean {
  try {
    encodeProxyHeader({ addresses: V6_PAIR, tlvs: tlvs as never }, { version: 2 });
    return true;
  } catch {
    return false;
  }
}

/** `EgressDecision.packets` options: none, or an `addr` whose host is an IP literal. */
const packetsOptions = (o: unknown): boolean =>
  o === undefined ||
  (isObject(o) &&
    (o.addr === undefined || (isAddr(o.addr) && net.isIP((o.addr as { host: string }).host) !== 0)));

const egressDecision: Check = (v) => {
  if (isBlock(v, false)) return null;
  if (isObject(v) && v.kind === 'direct' && isAddr(v.addr) && directOptions(v.options)) return null;
  if (isObject(v) && v.kind === 'viaProxy' && isAddr(v.proxy)) return null;
  if (isObject(v) && v.kind === 'packets' && packetsOptions(v.options)) return null;
  return 'an EgressDecision (direct with an address and optional proxyProtocol: version 1, or 2 with crc32c and tlvs the wire can carry; block with a reason; viaProxy with a proxy; or packets with an optional IP address)';
};

const ipList: Check = (v) => (isIpList(v) ? null : 'a list of IP addresses, or EgressDecision.block(reason)');

const ipListOrNothing: Check = (v) =>
  v === undefined || isIpList(v)
    ? null
    : 'a list of IP addresses, undefined, or EgressDecision.block(reason)';

const upstreamListOrNothing: Check = (v) =>
  v === undefined || (Array.isArray(v) && v.every((x) => typeof x === 'string'))
    ? null
    : 'a list of host:port strings, or undefined';

const ipFlowDecision: Check = (v) => {
  if (isObject(v) && (v.kind === 'upgrade' || v.kind === 'forward')) return null;
  if (isObject(v) && (v.kind === 'drop' || v.kind === 'reject') && isReason(v.reason)) return null;
  if (isObject(v) && v.kind === 'redirect' && isAddr(v.addr)) return null;
  return 'an IpFlowDecision (upgrade, redirect with an address, forward, drop or reject with a reason)';
};

const pipelineOrNothing: Check = (v) =>
  v === undefined || typeof v === 'function' ? null : 'an AppTunnelPipeline function or undefined';

const tunnelDecision: Check = (v) =>
  (isObject(v) && (v.kind === 'intercept' || v.kind === 'passThrough' || v.kind === 'http')) ||
  isBlock(v, false)
    ? null
    : 'a TunnelDecision (intercept, passThrough, http, or block with a reason)';

const datagramSocketOrNothing: Check = (v) =>
  v === undefined ||
  (isObject(v) && typeof v.send === 'function' && typeof v.on === 'function' && typeof v.close === 'function')
    ? null
    : 'a node:dgram Socket or undefined';

const streamOrNothing: Check = (v) =>
  v === undefined || (isObject(v) && typeof v.write === 'function' && typeof v.on === 'function')
    ? null
    : 'a connected Duplex stream or undefined';

/**
 * The checks, by `group.method`; methods not listed are events (their return is ignored), or,
 * for `datagram.handleDatagram` and `ipFlow.handlePacket`, checked by their runner itself (a wrapper per datagram
 * would cost every packet; an unknown verdict drops the datagram there).
 */
const CHECKS: Readonly<Record<string, Check>> = {
  'ingress.handleConnection': ingressDecision,
  'proxyProtocol.handleConnection': ingressDecision,
  'httpRequest.handleProxyConnectRequest': connectDirective,
  'httpRequest.handleProxyConnectResponse': responseHead,
  'httpRequest.handleRequest': requestDecision,
  'httpRequest.handleResponse': responseHead,
  'httpBody.getRequestBodyFilter': bodyFilterOrNothing,
  'httpBody.getResponseBodyFilter': bodyFilterOrNothing,
  'tunnel.handleTunnelStart': tunnelDecision,
  'tunnel.getAppTunnelPipeline': pipelineOrNothing,
  'egress.handleConnection': egressDecision,
  'egress.handleUpstreamIps': ipList,
  'egress.dnsResolveOverride': ipListOrNothing,
  'egress.tcpConnectOverride': streamOrNothing,
  'egress.selectUpstream': upstreamListOrNothing,
  'egress.udpConnectOverride': datagramSocketOrNothing,
  'ipTunnel.handleTunnel': ingressDecision,
  'ipFlow.handleFlow': ipFlowDecision,
};

/** Hooks that return addresses and may block instead, with a reason. */
const MAY_BLOCK = new Set(['egress.handleUpstreamIps', 'egress.dnsResolveOverride']);

/** A short description of a returned value for the log (never the whole object). */
function describe(v: unknown): string {
  if (v === undefined || v === null) return String(v);
  if (isObject(v) && 'kind' in v) return `{ kind: ${JSON.stringify(v.kind)} }`;
  if (Array.isArray(v)) return 'a list';
  return typeof v;
}

/**
 * Wraps `fn`, the app's `group.method` bound to its object, so that what it returns is checked
 * (see the module comment). Returns `fn` itself for methods whose return is ignored.
 */
export function checked<F extends (...args: never[]) => unknown>(
  key: string,
  interfaceName: string,
  fn: F,
): F {
  const check = CHECKS[key];
  if (check === undefined) return fn;
  const mayBlock = MAY_BLOCK.has(key);
  const verify = (value: unknown): unknown => {
    if (mayBlock && isBlock(value, false)) {
      throw new OxyError(OXY_ERR.EGRESS_BLOCKED, (value as { reason: string }).reason, {
        source: 'internal',
      });
    }
    const expected = check(value);
    if (expected === null) return value;
    throw new OxyError(OXY_ERR.INVALID_DECISION, `returned ${describe(value)}, not ${expected}`, {
      source: 'internal',
    });
  };
  const wrapped = (...args: never[]): unknown => {
    const r = fn(...args);
    return isObject(r) && typeof (r as { then?: unknown }).then === 'function'
      ? (r as unknown as Promise<unknown>).then(verify)
      : verify(r);
  };
  Object.defineProperty(wrapped, 'name', { value: `checked ${interfaceName}` });
  return wrapped as F;
}
