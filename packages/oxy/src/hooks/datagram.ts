/**
 * `DatagramHook`: a look at every datagram of a datagram session (a `udp` endpoint's session,
 * and later CONNECT-UDP and upgraded UDP flows), both ways. It is synchronous on purpose: a
 * datagram path cannot wait for a promise per packet without reordering or buffering them, so a
 * decision that needs I/O belongs in the egress or ingress hooks, once per session.
 *
 * Order: the session's ingress and egress hooks (once) → for each datagram client → upstream,
 * `handleDatagram(…, 'up', …)` before it is sent; for each datagram upstream → client,
 * `handleDatagram(…, 'down', …)` before it is sent back.
 */
import type { ExtTypes, RequestContext } from '../context/contexts.ts';

/** What becomes of one datagram. Build one with {@link DatagramVerdict}. */
export type DatagramVerdict =
  | { readonly kind: 'pass' }
  | { readonly kind: 'drop'; readonly reason: string }
  | { readonly kind: 'rewrite'; readonly data: Uint8Array };

/** Constructors of {@link DatagramVerdict}. */
export const DatagramVerdict = {
  /** Send the datagram on as it is. */
  pass: (): DatagramVerdict => PASS,
  /** Do not send it; counted by `reason` (keep the set of reasons small: it is a metric label). */
  drop: (reason: string): DatagramVerdict => ({ kind: 'drop', reason }),
  /**
   * Send `data` instead, of any length up to the endpoint's `max_datagram_size`: a longer one is
   * not sent, and is counted as `oxy_udp_dropped_total{reason="too_large"}`.
   */
  rewrite: (data: Uint8Array): DatagramVerdict => ({ kind: 'rewrite', data }),
} as const;

const PASS: DatagramVerdict = Object.freeze({ kind: 'pass' });

/** Which way a datagram goes: `up` is client → upstream. */
export type DatagramDirection = 'up' | 'down';

/** Hooks on datagrams. Every method is optional. */
export interface DatagramHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires for every datagram of every session, both ways, synchronously, with a view of the
   * datagram that is valid only during the call (copy what you keep). Return a verdict, or
   * `undefined` to pass it. Throwing drops the datagram (fails closed), logged and counted.
   * Default: every datagram passes, and the framework forwards them without making a view.
   */
  handleDatagram?(
    data: Uint8Array,
    direction: DatagramDirection,
    ctx: RequestContext<X>,
  ): DatagramVerdict | undefined;
}

/** The method names of {@link DatagramHook}, for validation at registration. */
export const DATAGRAM_HOOK_METHODS = ['handleDatagram'] as const;
