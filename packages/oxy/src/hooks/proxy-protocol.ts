/**
 * `ProxyProtocolHook` (the seed's `ProxyProtocolConnectionHook`): the app's look at the PROXY
 * header of a connection, with its TLVs, before the connection is served.
 *
 * Order, on an endpoint with `proxy_protocol.enabled`: accept → trusted-peer check → header read
 * (a malformed, late or untrusted one closes the connection without a hook) →
 * `ProxyProtocolHook.handleConnection` → `IngressHook.handleConnection` (whose `ctx.client` is
 * already the header's source) → requests or tunnels → `IngressHook.handleConnectionClose`.
 * On a `udp` endpoint it fires once per new session, with the header of the session's first
 * datagram.
 */
import type { ExtTypes, IngressContext } from '../context/contexts.ts';
import type { ProxyHeader } from '../protocols/proxy-protocol/index.ts';
import type { IngressDecision } from './ingress.ts';

/** Hooks on PROXY protocol headers. Every method is optional. */
export interface ProxyProtocolHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per connection (per session on `udp`), after its PROXY header was read and
   * checked (CRC32C included) and before `IngressHook.handleConnection`. `header` has the
   * version, command, addresses and TLVs by type (`header.tlvs`: ALPN, AUTHORITY, UNIQUE_ID,
   * SSL with its sub-TLVs, NETNS, unknown ones as bytes); a LOCAL command or UNSPEC family
   * leaves `header.addresses` null and the socket's own addresses in use. `ctx.client` is the
   * header's source when it carries one.
   *
   * `IngressDecision.allow()` serves the connection; `IngressDecision.block(reason)` closes it
   * (counted as `connections_failed{reason="blocked"}`, audited with the reason). Throwing or
   * rejecting closes that connection only (`OXY_ERR_HOOK_FAILED`, logged and counted).
   * Default: `IngressDecision.allow()`.
   */
  handleConnection?(header: ProxyHeader, ctx: IngressContext<X>): IngressDecision | Promise<IngressDecision>;
}

/** The method names of {@link ProxyProtocolHook}, for validation at registration. */
export const PROXY_PROTOCOL_HOOK_METHODS = ['handleConnection'] as const;
