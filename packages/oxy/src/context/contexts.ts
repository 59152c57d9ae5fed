/**
 * The contexts Oxy hands to hooks: one per endpoint, per ingress connection, per request and per
 * egress connection. Each links to its parent (egress → request → ingress → endpoint), so a hook
 * that runs late (egress) can read what an earlier one (a CONNECT request hook) stored.
 *
 * Each context carries `ext`, the app's own state for that context kind. Its type is a generic
 * parameter of the public surface only (`IngressContext<MyExt>`); inside the framework contexts
 * are `IngressContext` with `ext: object`, and the one cast between the two lives in `ext.ts`.
 *
 * Ordering rule: a context is created with its `ext` already built (the app's factory runs once,
 * at creation), so hooks never see a context whose shape changes later.
 */
import type { ProxyHeader } from '../protocols/proxy-protocol/types.ts';
import type { ListenAddr } from './addr.ts';

/** A host (IP address or name; IPv6 without brackets) and a port. */
export interface SocketAddr {
  readonly host: string;
  readonly port: number;
}

/**
 * The app's state types, one per context kind. An app declares the kinds it uses:
 * `defineApp<{ ingress: { psk?: boolean } }>(…)` (a kind with required fields needs its factory),
 * or lets `ext` factories infer them: `ext: { ingress: () => ({ psk: false }) }`.
 */
export interface ExtTypes {
  endpoint?: object;
  ingress?: object;
  request?: object;
  egress?: object;
}

/** Type-only key under which an app's per-endpoint settings type travels beside its ext types. */
declare const ENDPOINT_SETTINGS: unique symbol;

/**
 * `X` with `E`, the type of the app's per-endpoint settings (`endpoints.<name>.app`), attached:
 * hooks typed with it see `ctx.endpoint.appSettings` as `E`. `defineApp` gives the hooks that
 * `start` returns this type from the app's `settings.endpoint` schema; write it yourself only
 * for hooks declared apart from the app (`class Gate implements IngressHook<WithEndpointSettings<MyExt, MyEndpoint>>`).
 */
export type WithEndpointSettings<X extends ExtTypes, E> = X & { readonly [ENDPOINT_SETTINGS]?: E };

/** The per-endpoint settings type carried by `X` (see {@link WithEndpointSettings}), or `unknown`. */
export type EndpointSettingsOf<X extends ExtTypes> = X extends { readonly [ENDPOINT_SETTINGS]?: infer E }
  ? E
  : unknown;

/** The ext type of context kind `K`, or an empty object type when the app declares none. */
export type ExtOf<X extends ExtTypes, K extends keyof ExtTypes> = X[K] extends object
  ? X[K]
  : Record<never, never>;

/** A listening endpoint (`endpoints.<name>` in the settings). One per endpoint, for the process's life. */
export interface EndpointContext<X extends ExtTypes = ExtTypes> {
  /** The endpoint's name: the key under `endpoints`. */
  readonly name: string;
  /** Where it listens. */
  readonly addr: ListenAddr;
  /**
   * The endpoint's app settings (`endpoints.<name>.app`), parsed by the app's `settings.endpoint`
   * schema and typed by it in the hooks `start` returns; `null` when the app defines none.
   */
  readonly appSettings: EndpointSettingsOf<X>;
  readonly ext: ExtOf<X, 'endpoint'>;
}

/** The on-ramp protocol of an ingress connection. Grows with the on-ramps. */
export type IngressProtocol =
  | 'http/1.1'
  | 'h2'
  | 'h2c'
  | 'proxy-protocol'
  | 'tcp'
  | 'udp'
  | 'ip_seqpacket'
  | 'ip_gue';

/**
 * The identity a client proved with a certificate during the TLS handshake (mTLS): read from
 * its leaf certificate after that certificate verified against the endpoint's `tls.client_ca`.
 * Only verified certificates become identities; Oxy never exposes one that failed.
 */
export interface ClientIdentity {
  /** The subject distinguished name, one `KEY=value` per attribute joined by `, ` (`CN=alice, O=Example`). */
  readonly subject: string;
  /** Subject alternative names as OpenSSL writes them: `DNS:a.example`, `IP Address:10.0.0.1`, `URI:spiffe://…`, `email:…`. */
  readonly sans: readonly string[];
  /** The issuer distinguished name, written like `subject`. */
  readonly issuer: string;
  /** SHA-256 fingerprint of the DER certificate, upper-case hex pairs joined by `:`. */
  readonly fingerprintSha256: string;
  /** Start of validity (ISO 8601). */
  readonly notBefore: string;
  /** End of validity (ISO 8601). */
  readonly notAfter: string;
  /** Serial number, upper-case hex. */
  readonly serialNumber: string;
}

/** One accepted client connection. Created when the connection is accepted, before any byte is read. */
export interface IngressContext<X extends ExtTypes = ExtTypes> {
  /** Process-unique id, the `conn_id` log field. */
  readonly id: string;
  readonly endpoint: EndpointContext<X>;
  /**
   * The client's address: the source a PROXY protocol header names when the endpoint reads one,
   * otherwise the socket's peer. Every hook, log line and audit record uses this one. A client
   * of a Unix-socket endpoint (or an `ip_seqpacket` tunnel) has no address: host `''` and port
   * 0, written as an empty `client` in records and log lines.
   */
  readonly client: SocketAddr;
  /** The socket's own peer (a load balancer, with PROXY protocol); equals `client` without a header. */
  readonly peer: SocketAddr;
  /** The PROXY protocol header the connection opened with (its TLVs included), or null. */
  readonly proxyHeader: ProxyHeader | null;
  /** The local address the client connected to. */
  readonly local: SocketAddr;
  readonly protocol: IngressProtocol;
  /** `performance.now()` at accept. */
  readonly startedAt: number;
  /**
   * The client's verified certificate identity on a TLS endpoint with `tls.client_auth`
   * `optional` or `required`; `null` without TLS, without a client certificate, and before the
   * handshake (so always in `IngressHook.handleConnection`, which runs at accept). Set once the
   * handshake verified the certificate, before `TlsHook.handleClientIdentity` and any request hook.
   */
  readonly clientIdentity: ClientIdentity | null;
  readonly ext: ExtOf<X, 'ingress'>;
}

/**
 * What a request asks for: `connect` (a CONNECT tunnel), `forward` (an absolute-form request
 * forwarded upstream), `upgrade` (an absolute-form request with `Upgrade`, e.g. WebSocket),
 * `tcp` (a connection to a `tcp` endpoint, carried as a tunnel), `udp` (a datagram session
 * on a `udp` endpoint) or `connect-udp` (a MASQUE CONNECT-UDP request, RFC 9298, carried as a
 * datagram session), `connect-ip` (a MASQUE CONNECT-IP tunnel, RFC 9484, its packets fed to the
 * IP pipeline), `ip-tcp` or `ip-udp` (a flow of an IP tunnel upgraded to a stream or a
 * datagram session), `intercepted` (a request read from an intercepted HTTPS tunnel, sent to the
 * origin over TLS) or `tunnelled` (a plain HTTP request read from inside a CONNECT tunnel a
 * `TunnelHook.handleTunnelStart` sent to HTTP); the last two name their tunnel's request in
 * {@link RequestContext.parentId}. Every unit of traffic has a request context, so the tunnel and egress
 * hooks see the same shape whatever the on-ramp.
 */
export type RequestKind =
  | 'connect'
  | 'forward'
  | 'upgrade'
  | 'tcp'
  | 'udp'
  | 'connect-udp'
  | 'connect-ip'
  | 'ip-tcp'
  | 'ip-udp'
  | 'intercepted'
  | 'tunnelled';

/** One request on an ingress connection (a CONNECT, or one absolute-form request). */
export interface RequestContext<X extends ExtTypes = ExtTypes> {
  /** Process-unique id, the `request_id` log field. */
  readonly id: string;
  readonly ingress: IngressContext<X>;
  readonly kind: RequestKind;
  /**
   * The id of the CONNECT request whose tunnel carried this request (kinds `intercepted` and
   * `tunnelled`), or null.
   */
  readonly parentId: string | null;
  readonly method: string;
  /** Where the client asked to go: the CONNECT authority, or the absolute URL's host and port. */
  readonly target: SocketAddr;
  /** `performance.now()` when the request head was read. */
  readonly startedAt: number;
  /**
   * `ip:port` of the upstream connection the request goes out on, once there is one (set
   * before `handleResponse` and `handleProxyConnectResponse`, for new and pooled connections
   * alike), or null: not connected yet, blocked, or failed before a connection.
   */
  readonly upstream: string | null;
  /** True when {@link upstream} is a keep-alive connection reused from the pool. */
  readonly upstreamReused: boolean;
  readonly ext: ExtOf<X, 'request'>;
}

/** One upstream connection attempt: its decision, resolution, connect and establishment. */
export interface EgressContext<X extends ExtTypes = ExtTypes> {
  /** Process-unique id, the `egress_id` log field. */
  readonly id: string;
  readonly ingress: IngressContext<X>;
  /** The request that asked for this connection, or `null` for on-ramps without requests. */
  readonly request: RequestContext<X> | null;
  /** The destination the client asked for, before any decision or resolution. */
  readonly target: SocketAddr;
  readonly ext: ExtOf<X, 'egress'>;
}

/** Statistics of a finished ingress connection, given to `IngressHook.handleConnectionClose`. */
export interface ConnectionStats {
  /** Bytes read from the client (request heads, bodies and tunnel payload). */
  readonly bytesIn: number;
  /** Bytes written to the client. */
  readonly bytesOut: number;
  readonly durationMs: number;
  /** Requests read on the connection (a CONNECT counts as one). */
  readonly requests: number;
  /** Why the connection ended: `client_closed`, `error`, `blocked`, `idle_timeout`, `drained`, … */
  readonly closeReason: string;
}
