/**
 * `HttpRequestHook`: the L7 hooks on requests a client sends to an HTTP endpoint, whatever the
 * HTTP version (HTTP/1.1 now, HTTP/2 streams drive the same pipeline).
 *
 * Order for a CONNECT: `handleProxyConnectRequest` → egress hooks → `handleProxyConnectResponse`
 * → the tunnel (see `TunnelHook`). Order for an absolute-form request (and `Upgrade`):
 * `handleRequest` → egress hooks (only when a new upstream connection is needed) →
 * `handleResponse` → body streamed to the client.
 *
 * Heads are plain mutable objects: a hook rewrites by assigning to them.
 */
import type { ExtTypes, RequestContext } from '../context/contexts.ts';

/** Header fields with lower-case names, as Node gives them (`set-cookie` is always an array). */
export type HttpHeaders = Record<string, string | string[] | undefined>;

/** A request head. Assign to its fields to rewrite the request before it is forwarded. */
export interface RequestHead {
  method: string;
  /** `http` or `https` for absolute-form requests; empty for CONNECT. */
  scheme: string;
  /** `host[:port]` (the CONNECT target, or the absolute URL's authority). */
  authority: string;
  /** Path and query (`/a?b`); empty for CONNECT. */
  path: string;
  /** Header fields with lower-case names. Hop-by-hop fields are removed before forwarding. */
  headers: HttpHeaders;
}

/** A response head. Assign to its fields to rewrite the response before the client sees it. */
export interface ResponseHead {
  status: number;
  headers: HttpHeaders;
}

/** What to do with a CONNECT request. Build one with {@link ConnectDirective}. */
export type ConnectDirective =
  | { readonly kind: 'allow' }
  | { readonly kind: 'block'; readonly status: number; readonly reason: string };

const ALLOW_CONNECT: ConnectDirective = Object.freeze({ kind: 'allow' });

/** Constructors of {@link ConnectDirective}. */
export const ConnectDirective = {
  /** Go on: run the egress hooks and connect. */
  allow: (): ConnectDirective => ALLOW_CONNECT,
  /** Answer `status` (default 403) with `reason` as the body, and do not connect. */
  block: (status = 403, reason = 'blocked'): ConnectDirective => ({ kind: 'block', status, reason }),
} as const;

/** A response the app answers itself instead of forwarding. */
export interface DirectResponse {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array;
}

/** What to do with an absolute-form request. Build one with {@link RequestDecision}. */
export type RequestDecision =
  | { readonly kind: 'forward' }
  | ({ readonly kind: 'respond' } & DirectResponse)
  | { readonly kind: 'block'; readonly status: number; readonly reason: string };

const FORWARD: RequestDecision = Object.freeze({ kind: 'forward' });

/** Constructors of {@link RequestDecision}. */
export const RequestDecision = {
  /** Forward the request (with any edits made to its head). */
  forward: (): RequestDecision => FORWARD,
  /** Answer the client directly; nothing is sent upstream. */
  respond: (res: DirectResponse): RequestDecision => ({ kind: 'respond', ...res }),
  /** Answer `status` (default 403) with `reason` as the body; nothing is sent upstream. */
  block: (status = 403, reason = 'blocked'): RequestDecision => ({ kind: 'block', status, reason }),
} as const;

/** Hooks on HTTP requests. Every method is optional. */
export interface HttpRequestHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per CONNECT request, after its head was read and before any egress hook.
   * `allow` goes on to connect; `block(status)` answers that status and closes the tunnel
   * attempt (the ingress connection itself stays usable on HTTP/2). Throwing answers 500.
   * Default: `ConnectDirective.allow()`.
   */
  handleProxyConnectRequest?(
    head: RequestHead,
    ctx: RequestContext<X>,
  ): ConnectDirective | Promise<ConnectDirective>;
  /**
   * Fires once per successful CONNECT, after the upstream connection is established and before
   * the `200` goes to the client. Edit `res` in place (add headers, e.g. `Proxy-Status`) or
   * return a replacement; a status outside 2xx turns the tunnel down and closes upstream.
   * Throwing answers 500. Default: the plain `200`.
   */
  handleProxyConnectResponse?(
    res: ResponseHead,
    ctx: RequestContext<X>,
  ): ResponseHead | undefined | Promise<ResponseHead | undefined>;
  /**
   * Fires once per absolute-form request (including `Upgrade` requests), after its head was
   * read and before anything is sent upstream. Rewrite by editing `head` and returning
   * `forward`; `respond` answers directly; `block` answers an error status. Throwing answers
   * 500. Default: `RequestDecision.forward()`.
   */
  handleRequest?(head: RequestHead, ctx: RequestContext<X>): RequestDecision | Promise<RequestDecision>;
  /**
   * Fires once per forwarded request when the upstream response head arrives, before it is
   * sent to the client. Edit `res` in place or return a replacement. Hop-by-hop fields are
   * removed afterwards. Throwing answers 502. Default: the response as received.
   */
  handleResponse?(
    res: ResponseHead,
    ctx: RequestContext<X>,
  ): ResponseHead | undefined | Promise<ResponseHead | undefined>;
}

/** The method names of {@link HttpRequestHook}, for validation at registration. */
export const HTTP_REQUEST_HOOK_METHODS = [
  'handleProxyConnectRequest',
  'handleProxyConnectResponse',
  'handleRequest',
  'handleResponse',
] as const;
