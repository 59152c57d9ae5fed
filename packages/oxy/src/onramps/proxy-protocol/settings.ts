/**
 * Settings of the PROXY protocol on an endpoint (`endpoints.<name>.proxy_protocol`). This module
 * only declares the schema, so the PROXY on-ramp owns its knobs; the endpoint wiring includes it.
 *
 * Trust comes first: a connection (or datagram) from a peer outside `trusted_cidrs` is closed
 * (or dropped) before a byte of it is read, whatever it would have sent.
 */
import { type Infer, s } from 'foundations/settings';

/** The peers trusted by default: loopback only. */
export const DEFAULT_TRUSTED_CIDRS: readonly string[] = ['127.0.0.0/8', '::1/128'];

const DESCRIPTION =
  'PROXY protocol (HAProxy v1 and v2; SPP for UDP) in front of this endpoint. When on, every ' +
  'connection must start with a header (every datagram, on a udp endpoint), and the client that ' +
  'hooks, logs and audit records see is the header’s source.';
const ENABLED = 'Turns the PROXY protocol on; when on, a header is required (no header, no connection).';
const trustedCidrs = () =>
  s.cidrList(
    'Peers allowed to send a header (the proxies in front). A connection or datagram from any ' +
      'other peer is closed or dropped, and counted; an empty list trusts nobody.',
    DEFAULT_TRUSTED_CIDRS,
  );

/**
 * Schema of `endpoints.<name>.proxy_protocol` on a connection endpoint (`http`, `tcp`): a
 * header at the start of each connection, within `header_timeout`.
 */
export const ProxyProtocolSettings = s.enabled(
  DESCRIPTION,
  false,
  {
    trusted_cidrs: trustedCidrs(),
    header_timeout: s.duration(
      'Time allowed for the whole header to arrive after accept; then the connection is closed. ' +
        'At least 1ms: 0s, "no limit" for other timeouts, is refused here, as every connection must ' +
        'send its header in bounded time.',
      '5s',
      { min: '1ms' },
    ),
  },
  ENABLED,
);

/**
 * Schema of `endpoints.<name>.proxy_protocol` on a `udp` endpoint: a header before each
 * datagram, in `udp_format` (a datagram has no header timeout). Each protocol's section holds
 * only the keys that apply, so `--check` refuses `udp_format` on a `tcp` endpoint.
 */
export const ProxyProtocolDatagramSettings = s.enabled(
  DESCRIPTION,
  false,
  {
    trusted_cidrs: trustedCidrs(),
    udp_format: s.oneOf(
      'Header before each datagram: `v2` (PROXY v2, DGRAM) or `spp` ' +
        '(Cloudflare’s Simple Proxy Protocol, 38 bytes). Replies carry a header of the same form.',
      ['v2', 'spp'] as const,
      'v2',
    ),
  },
  ENABLED,
);

/** Parsed `endpoints.<name>.proxy_protocol` settings of a connection endpoint. */
export type ProxyProtocolSettings = Infer<typeof ProxyProtocolSettings>;

/** Parsed `endpoints.<name>.proxy_protocol` settings of a `udp` endpoint. */
export type ProxyProtocolDatagramSettings = Infer<typeof ProxyProtocolDatagramSettings>;
