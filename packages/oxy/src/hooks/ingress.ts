/**
 * `IngressHook`: the first and last word on every accepted connection, whatever the on-ramp
 * (HTTP/1.1 and HTTP/2 endpoints today; PROXY protocol and TCP on-ramps later).
 *
 * Order: accept → `handleConnection` (before any byte is read) → requests or tunnels →
 * `handleConnectionClose` (exactly once, also for blocked connections).
 */
import type { ConnectionStats, ExtTypes, IngressContext } from '../context/contexts.ts';

/** What to do with a new connection. Build one with {@link IngressDecision}. */
export type IngressDecision =
  | { readonly kind: 'allow' }
  | { readonly kind: 'block'; readonly reason: string };

const ALLOW: IngressDecision = Object.freeze({ kind: 'allow' });

/** Constructors of {@link IngressDecision}. */
export const IngressDecision = {
  /** Serve the connection. */
  allow: (): IngressDecision => ALLOW,
  /** Close the connection at once, without reading from it; `reason` goes to the log and audit. */
  block: (reason: string): IngressDecision => ({ kind: 'block', reason }),
} as const;

/** Hooks on ingress connections. Every method is optional. */
export interface IngressHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per accepted connection, before any byte is read from it, with the context (and
   * its `ext`) already built. `allow` serves it; `block` closes it (counted as
   * `connections_failed{reason="blocked"}`). Throwing closes that connection only.
   * Default: `IngressDecision.allow()`.
   */
  handleConnection?(ctx: IngressContext<X>): IngressDecision | Promise<IngressDecision>;
  /**
   * Fires exactly once when a connection has closed, for allowed and blocked connections, with
   * its statistics. The return value is ignored. Default: nothing.
   */
  handleConnectionClose?(stats: ConnectionStats, ctx: IngressContext<X>): void;
}

/** The method names of {@link IngressHook}, for validation at registration. */
export const INGRESS_HOOK_METHODS = ['handleConnection', 'handleConnectionClose'] as const;
