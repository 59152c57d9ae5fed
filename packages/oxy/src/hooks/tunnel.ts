/**
 * `TunnelHook`: control over the bytes of a tunnel: a CONNECT, a `tcp` endpoint's stream or a
 * TCP flow of an IP tunnel upgraded to a stream (request kinds `connect`, `tcp`, `ip-tcp`), all
 * in the one stream runner.
 *
 * Order: CONNECT allowed → egress connected → CONNECT response sent (or the stream accepted) →
 * (when the app has `handleTunnelStart`, or for CONNECT tunnels `interception.enabled`: the
 * client's first bytes are read
 * → `handleTunnelStart` → intercept, parse as HTTP, pass through or block) →
 * `getAppTunnelPipeline` (pass-through only) → the app's pipeline or Oxy's pump → audit record.
 */
import type { Duplex } from 'node:stream';
import type { EgressContext, ExtTypes, RequestContext } from '../context/contexts.ts';

/**
 * An app-provided tunnel: it receives the client side and the upstream side and moves bytes
 * itself (inspect, rewrite, record). When the promise settles Oxy destroys both sides, so
 * settle it only once both writable sides have finished (e.g. `await` `stream.promises.pipeline`
 * for each direction), or the bytes still queued are lost. A rejection is logged once and
 * counted, and fails only this tunnel. The endpoint's `tunnel_idle_timeout` and
 * `tunnel_max_lifetime` still apply (Oxy destroys both sides when either passes), and the
 * tunnel's byte counts are what the upstream socket sent and received.
 */
export type AppTunnelPipeline = (client: Duplex, upstream: Duplex) => Promise<void>;

/**
 * What the first bytes of a CONNECT tunnel look like: `tls` (a whole ClientHello was read,
 * `serverName` its SNI or null, `alpn` what it offers), `http` (an HTTP/1.x request line
 * starts: a token of upper-case letters and a space) or `other`.
 */
export interface TunnelStart {
  readonly kind: 'tls' | 'http' | 'other';
  /** The ClientHello's SNI (lower case), or null (no SNI, or not TLS). */
  readonly serverName: string | null;
  /** The ALPN protocols the ClientHello offers, in its order; empty when not TLS. */
  readonly alpn: readonly string[];
}

/** What to do with a tunnel. Build one with {@link TunnelDecision}. */
export type TunnelDecision =
  | { readonly kind: 'intercept' }
  | { readonly kind: 'passThrough' }
  | { readonly kind: 'http' }
  | { readonly kind: 'block'; readonly reason: string };

const INTERCEPT: TunnelDecision = Object.freeze({ kind: 'intercept' });
const PASS_THROUGH: TunnelDecision = Object.freeze({ kind: 'passThrough' });
const HTTP: TunnelDecision = Object.freeze({ kind: 'http' });

/** Constructors of {@link TunnelDecision}. */
export const TunnelDecision = {
  /**
   * Terminate the client's TLS with a leaf minted for the SNI (or the CONNECT target) and send
   * the requests inside through the request pipeline (kind `intercepted`) to the origin over
   * verified TLS. Only for a `tls` start, and only with `interception.enabled` (the CA);
   * otherwise the tunnel is closed as blocked.
   */
  intercept: (): TunnelDecision => INTERCEPT,
  /** Move the bytes untouched (then `getAppTunnelPipeline`, the splice or the pump). */
  passThrough: (): TunnelDecision => PASS_THROUGH,
  /**
   * Parse the bytes as HTTP/1.1 requests (kind `tunnelled`), each through the request pipeline
   * to the tunnel's target in the clear. Only for an `http` start; otherwise blocked.
   */
  http: (): TunnelDecision => HTTP,
  /** Close the tunnel; `reason` goes to the log and the audit record. */
  block: (reason: string): TunnelDecision => ({ kind: 'block', reason }),
} as const;

/** Hooks on tunnels. Every method is optional. */
export interface TunnelHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per tunnel (a CONNECT over HTTP/1.1 or HTTP/2 after its 2xx, a `tcp` endpoint's
   * stream, an upgraded `ip-tcp` flow; `ctx.kind` says which), when the client's first bytes
   * arrived: a whole ClientHello (`kind: 'tls'`, with its SNI and ALPN), the start of an
   * HTTP request, or anything else. Not called when the upstream speaks first (the tunnel is
   * passed through). Its presence turns off the addon's whole-tunnel path. Throwing closes this
   * tunnel only. Default (no hook): intercept a `tls` start when `interception.enabled` and the
   * SNI (or the CONNECT host) matches `interception.hosts`; pass everything else through.
   */
  handleTunnelStart?(first: TunnelStart, ctx: RequestContext<X>): TunnelDecision | Promise<TunnelDecision>;
  /**
   * Fires once per tunnel, after the upstream connection is established and the client was told
   * so. Return a pipeline to pump the bytes yourself, or `undefined` for Oxy's own pump (with
   * backpressure and half-close). Either way the idle timeout, the lifetime limit and the byte
   * counts apply. Default: `undefined`.
   */
  getAppTunnelPipeline?(
    ctx: RequestContext<X>,
    egress: EgressContext<X>,
  ): AppTunnelPipeline | undefined | Promise<AppTunnelPipeline | undefined>;
}

/** The method names of {@link TunnelHook}, for validation at registration. */
export const TUNNEL_HOOK_METHODS = ['handleTunnelStart', 'getAppTunnelPipeline'] as const;
