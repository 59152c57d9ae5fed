/**
 * The PROXY header of a datagram on a `udp` endpoint: PROXY v2 (the DGRAM transport) or SPP,
 * one header before each datagram's payload, parsed independently for each ("the receiver MUST
 * parse the header independently for each received datagram"), and the reply's header: the same
 * form with the source and destination swapped, so the proxy in front can route the reply back
 * to its client (SPP requires a header on replies; the proxy strips it).
 *
 * Ordering rule: trust first (when a peer is given, an untrusted one is refused before its bytes
 * are looked at), then the header. The payload is a view into the datagram, never a copy.
 */
import {
  decodeSpp,
  decodeV2,
  encodeSpp,
  encodeV2,
  type ProxyAddresses,
  type ProxyHeader,
  ProxyProtocolError,
} from '../../protocols/proxy-protocol/index.ts';
import { countHeader, countRejected } from './metrics.ts';
import type { TrustedPeers } from './trust.ts';

/** Which header precedes each datagram (`proxy_protocol.udp_format`). */
export type DatagramHeaderFormat = 'v2' | 'spp';

/** Options of {@link parseDatagramHeader}. */
export interface DatagramHeaderOptions {
  /** The datagram's sender and the trusted peers: checked first when both are given. */
  readonly peer?: string;
  readonly trusted?: TrustedPeers;
  /** Largest v2 header accepted. Default 4096. */
  readonly maxV2Length?: number;
  /** The endpoint's name, for the metrics' `endpoint` label. Default empty. */
  readonly endpoint?: string;
}

/** A datagram's header and its payload (a view into the datagram). */
export interface DatagramWithHeader {
  readonly header: ProxyHeader;
  readonly payload: Uint8Array;
}

function check(
  datagram: Uint8Array,
  format: DatagramHeaderFormat,
  options: DatagramHeaderOptions,
): ProxyHeader {
  if (options.trusted !== undefined && !options.trusted.has(options.peer)) {
    throw new ProxyProtocolError('untrusted', `peer ${options.peer ?? '?'} is not in trusted_cidrs`);
  }
  if (format === 'spp') return decodeSpp(datagram);
  const header = decodeV2(
    datagram,
    options.maxV2Length === undefined ? {} : { maxLength: options.maxV2Length },
  );
  if (header.command === 'proxy' && header.transport === 'stream') {
    throw new ProxyProtocolError('bad_family', 'a STREAM header before a datagram');
  }
  return header;
}

/**
 * Parses the header before a datagram's payload. Throws a `ProxyProtocolError` (counted by
 * reason) when the datagram must be dropped: untrusted sender, malformed or short header, or a
 * v2 header that announces a stream. A v2 LOCAL header is accepted (the sender's own traffic).
 */
export function parseDatagramHeader(
  datagram: Uint8Array,
  format: DatagramHeaderFormat,
  options: DatagramHeaderOptions = {},
): DatagramWithHeader {
  let header: ProxyHeader;
  try {
    header = check(datagram, format, options);
  } catch (e) {
    if (e instanceof ProxyProtocolError) countRejected(e.reason, options.endpoint);
    throw e;
  }
  countHeader(header.version, options.endpoint);
  return { header, payload: datagram.subarray(header.length) };
}

function swapped(a: ProxyAddresses): ProxyAddresses {
  return a.family === 'unix'
    ? { family: 'unix', source: a.destination, destination: a.source }
    : { family: a.family, source: a.destination, destination: a.source };
}

/**
 * A reply datagram for the client behind `request` (the header a datagram came with): a header
 * of the same form with the addresses swapped, then `payload`. A v2 header without addresses
 * (LOCAL, UNSPEC) is answered with the same command and no addresses. Throws a `RangeError` for
 * a header that cannot be answered in its form (SPP without IP addresses).
 */
export function encodeDatagramReply(request: ProxyHeader, payload: Uint8Array): Buffer {
  const a = request.addresses;
  let head: Uint8Array;
  if (request.version === 'spp') {
    if (a === null || a.family === 'unix') throw new RangeError('an SPP reply needs IP addresses');
    head = encodeSpp(a.destination, a.source);
  } else if (request.version === 2) {
    head = encodeV2({
      command: request.command,
      transport: 'dgram',
      addresses: a === null ? null : swapped(a),
    });
  } else {
    throw new RangeError('PROXY v1 does not carry datagrams');
  }
  const out = Buffer.allocUnsafe(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}
