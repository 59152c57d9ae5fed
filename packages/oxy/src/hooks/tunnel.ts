/**
 * `TunnelHook`: control over the bytes of a tunnel (a CONNECT today; PROXY protocol streams
 * and upgraded IP flows later go through the same stream pipeline).
 *
 * Order: CONNECT allowed → egress connected → CONNECT response sent → `getAppTunnelPipeline`
 * → the app's pipeline or Oxy's pump → audit record.
 */
import type { Duplex } from 'node:stream';
import type { EgressContext, ExtTypes, RequestContext } from '../context/contexts.ts';

/**
 * An app-provided tunnel: it receives the client side and the upstream side and moves bytes
 * itself (inspect, rewrite, record). When the promise settles Oxy destroys both sides; a
 * rejection is logged once and counted, and fails only this tunnel.
 */
export type AppTunnelPipeline = (client: Duplex, upstream: Duplex) => Promise<void>;

/** Hooks on tunnels. Every method is optional. */
export interface TunnelHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per tunnel, after the upstream connection is established and the client was told
   * so. Return a pipeline to pump the bytes yourself, or `undefined` for Oxy's own pump (with
   * backpressure, half-close, idle timeout and byte counts). Default: `undefined`.
   */
  getAppTunnelPipeline?(
    ctx: RequestContext<X>,
    egress: EgressContext<X>,
  ): AppTunnelPipeline | undefined | Promise<AppTunnelPipeline | undefined>;
}

/** The method names of {@link TunnelHook}, for validation at registration. */
export const TUNNEL_HOOK_METHODS = ['getAppTunnelPipeline'] as const;
