/**
 * `HttpRequestHook`: the L7 hooks on requests a client sends to an HTTP endpoint, whatever the
 * HTTP version (HTTP/1.1 now, HTTP/2 streams drive the same pipeline).
 *
 * Order for a CONNECT: `handleProxyConnectRequest` → egress hooks → `handleProxyConnectResponse`
 * → the tunnel (see `TunnelHook`). Order for an absolute-form request (and `Upgrade`):
 * `handleRequest` → egress hooks (only when a new upstream connection is needed) →
 * `handleResponse` → body streamed to the client; for an `Upgrade` answered `101`, the `101`
 * and then the tunnel (`getAppTunnelPipeline`, no `handleTunnelStart`) in place of the body.
 *
 * Heads are plain mutable objects: a hook rewrites by assigning to them.
 */
import type { ExtTypes, RequestContext, RequestKind } from '../context/contexts.ts';

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

/** What went wrong with a request that failed, as the proxy saw it. */
export interface RequestError {
  /** A stable `OXY_ERR_*` code, or `error` for anything else. */
  readonly code: string;
  /** A short human-readable text (the code itself when nothing more is known). */
  readonly message: string;
}

/**
 * How a request or tunnel ended, given to {@link HttpRequestHook.handleRequestEnd}: the same
 * facts as its audit record. Times are milliseconds from when the request head was read (or
 * the `tcp`/`udp` session began).
 */
export interface RequestEndInfo {
  readonly kind: RequestKind;
  /** The request method (`CONNECT`, `GET`, …); `TCP` or `UDP` for an endpoint tunnel. */
  readonly method: string;
  /** Where the client asked to go, `host:port`. */
  readonly target: string;
  /** The status the client got; 0 when none was sent (a `tcp` tunnel, a client that left early). */
  readonly status: number;
  /** `ip:port` the request went to upstream, or null when no upstream was reached. */
  readonly upstream: string | null;
  /** True when the upstream connection was reused from the keep-alive pool. */
  readonly upstreamReused: boolean;
  /** Payload bytes from the client to upstream (request body, tunnel bytes). */
  readonly bytesUp: number;
  /** Payload bytes from upstream to the client (response body, tunnel bytes). */
  readonly bytesDown: number;
  readonly durationMs: number;
  /** When the upstream connection was ready (made, or taken from the pool); null if never. */
  readonly connectMs: number | null;
  /** When the upstream's response head arrived; null if never, or for a tunnel. */
  readonly firstByteMs: number | null;
  /**
   * Why it ended: `done`, `client_closed`, `upstream_closed`, `blocked`, `responded`,
   * `idle_timeout`, or an `OXY_ERR_*` code for a failure.
   */
  readonly closeReason: string;
  /**
   * What failed or blocked it (`code` `blocked` and the app's reason for a block by a request
   * hook), or null when it went through.
   */
  readonly error: RequestError | null;
}

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
   *
   * An `Upgrade` request's answer comes here too, `101` or not. A `101` kept as `101` is relayed
   * with the fields as edited (`Upgrade` and `Connection` kept) and becomes the tunnel; any other
   * status refuses the switch: the client gets that status with the fields and a short body, and
   * the upstream connection is closed (audited as `blocked`). A throw, or a 1xx for an answer
   * that did not switch, answers 502 and closes the upstream connection. The body of an answer
   * that is not a `101` keeps the upstream's framing whatever the hook did to the head.
   */
  handleResponse?(
    res: ResponseHead,
    ctx: RequestContext<X>,
  ): ResponseHead | undefined | Promise<ResponseHead | undefined>;
  /**
   * Fires once per request or tunnel when it ends, however it ends: every forwarded request,
   * CONNECT (HTTP/1.1 and HTTP/2), `Upgrade`, `tcp` endpoint tunnel and `udp` session, blocked
   * or failed ones included, at the moment its audit record is written. An event: what it
   * returns is ignored, a throw is logged and counted. Keep it cheap (it runs on every request).
   */
  handleRequestEnd?(info: RequestEndInfo, ctx: RequestContext<X>): void;
}

/** The method names of {@link HttpRequestHook}, for validation at registration. */
export const HTTP_REQUEST_HOOK_METHODS = [
  'handleProxyConnectRequest',
  'handleProxyConnectResponse',
  'handleRequest',
  'handleResponse',
  'handleRequestEnd',
] as const;
