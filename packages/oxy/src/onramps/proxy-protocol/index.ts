/**
 * The PROXY protocol on-ramp: reading the header that opens a connection (trust, timeout, split
 * reads), the header before each datagram and the reply's header, its settings and metrics.
 * The codecs themselves live in `protocols/proxy-protocol/` (sans-IO).
 */
export {
  type DatagramHeaderFormat,
  type DatagramHeaderOptions,
  type DatagramWithHeader,
  encodeDatagramReply,
  parseDatagramHeader,
} from './datagram.ts';
export { countHeader, countRejected, proxyProtocolMetrics } from './metrics.ts';
export {
  type ProxyHeaderRead,
  proxyReadOptions,
  type ReadProxyHeaderOptions,
  readProxyHeader,
} from './read.ts';
export { DEFAULT_TRUSTED_CIDRS, ProxyProtocolDatagramSettings, ProxyProtocolSettings } from './settings.ts';
export { TrustedPeers } from './trust.ts';
