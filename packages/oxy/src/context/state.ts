/**
 * The framework's own context objects: each implements the public context interface the hooks
 * see (with `ext` erased to `object`) plus the internal state Oxy keeps for it (socket,
 * telemetry, counters). One object per context: hooks get the same object Oxy works with, so
 * nothing is copied per hook call.
 *
 * Ordering rule: `ext` is built in the constructor (see `ext.ts`), before any hook can run; a
 * kind the app gives no factory for gets a fresh empty object when a hook first reads it.
 */
import net from 'node:net';
import type { CounterHandle, LogFieldSource, TelemetryContext } from 'foundations/telemetry';
import type { ProxyHeaderOut } from '../hooks/egress.ts';
import { proxyReadOptions, type ReadProxyHeaderOptions } from '../onramps/proxy-protocol/read.ts';
import type { ProxyHeader } from '../protocols/proxy-protocol/index.ts';
import type { EndpointSettings } from '../settings.ts';
import { httpMetrics } from '../telemetry/metrics.ts';
import { formatAddr, type ListenAddr } from './addr.ts';
import type {
  ClientIdentity,
  EgressContext,
  EndpointContext,
  IngressContext,
  IngressProtocol,
  RequestContext,
  RequestKind,
  SocketAddr,
} from './contexts.ts';
import { type ErasedExtFactories, newExt } from './ext.ts';
import { newId } from './ids.ts';

/** A listening endpoint. */
export class EndpointState implements EndpointContext {
  readonly name: string;
  readonly addr: ListenAddr;
  readonly appSettings: unknown;
  #ext: object | null;
  /** The app's state (`ext.ts`): built by its factory, or an empty object made on first use. */
  get ext(): object {
    if (this.#ext === null) this.#ext = {};
    return this.#ext;
  }
  readonly settings: EndpointSettings;
  /**
   * The local address of every connection accepted here, when the settings fix it (one IP, not
   * a wildcard, and a port): shared, so a connection costs no `getsockname(2)` and no object
   * for it. Null when only the kernel knows (`0.0.0.0`, `::`, port 0, a Unix socket).
   */
  readonly localAddr: SocketAddr | null;
  /** The limits of the stream units (tunnels) accepted here, in milliseconds. */
  readonly stream: StreamLimits;
  /** How to read the PROXY header every connection must open with, or null when it is off. */
  readonly proxyProtocol: ReadProxyHeaderOptions | null;
  /** The PROXY header a `tcp` endpoint sends its targets (`tcp.send_proxy_protocol`), or null. */
  readonly sendProxyProtocol: ProxyHeaderOut | null;
  /**
   * The handshake's last ACK to the upstream rides on the client's first bytes: a `tcp`
   * endpoint's `tcp.smart_connect`, an `http` endpoint's `tunnel_smart_connect` (its tunnels).
   */
  readonly smartConnect: boolean;
  /** Metric handles of this endpoint, looked up once instead of per request. */
  readonly metrics: {
    readonly forwardRequests: CounterHandle;
    readonly connectRequests: CounterHandle;
    readonly upgradeRequests: CounterHandle;
  };

  constructor(name: string, settings: EndpointSettings & { app?: unknown }, ext: ErasedExtFactories) {
    this.name = name;
    this.metrics = {
      forwardRequests: httpMetrics.requests_total({ endpoint: name, kind: 'forward' }),
      connectRequests: httpMetrics.requests_total({ endpoint: name, kind: 'connect' }),
      upgradeRequests: httpMetrics.requests_total({ endpoint: name, kind: 'upgrade' }),
    };
    this.addr = settings.addr;
    this.localAddr = fixedLocalAddr(settings.addr);
    this.appSettings = settings.app ?? null;
    this.settings = settings;
    this.stream =
      settings.protocol === 'udp'
        ? {
            idleTimeoutMs: settings.udp.idle_timeout,
            maxLifetimeMs: 0,
            splice: false,
            endOnUpstreamEnd: false,
          }
        : {
            idleTimeoutMs: settings.tunnel_idle_timeout,
            maxLifetimeMs: settings.tunnel_max_lifetime,
            splice: settings.tunnel_splice,
            endOnUpstreamEnd: !settings.tunnel_half_close,
          };
    // IP tunnel endpoints carry packets, never a PROXY header; a udp endpoint reads one per
    // datagram (`onramps/udp/onramp.ts`), not at the start of a connection.
    this.proxyProtocol =
      (settings.protocol === 'http' || settings.protocol === 'tcp') && settings.proxy_protocol.enabled
        ? proxyReadOptions(settings.proxy_protocol, { unshift: true, endpoint: name })
        : null;
    const send = settings.protocol === 'tcp' ? settings.tcp.send_proxy_protocol : 'off';
    this.sendProxyProtocol = send === 'off' ? null : Object.freeze({ version: send === 'v1' ? 1 : 2 });
    this.smartConnect =
      settings.protocol === 'tcp'
        ? settings.tcp.smart_connect
        : settings.protocol === 'http' && settings.tunnel_smart_connect;
    this.#ext = newExt(ext.endpoint);
  }
}

/** Idle and lifetime limits of a stream unit, and whether the kernel may splice it. */
export interface StreamLimits {
  readonly idleTimeoutMs: number;
  /** 0: no limit. */
  readonly maxLifetimeMs: number;
  readonly splice: boolean;
  /** `tunnel_half_close: false`: the upstream's end ends the unit (pump.ts `PumpOptions`). */
  readonly endOnUpstreamEnd: boolean;
}

/**
 * The address `getsockname(2)` reports for every connection accepted on `addr`, written as
 * Node writes it, or null when it depends on the connection (a wildcard, port 0) or on a name.
 */
export function fixedLocalAddr(addr: ListenAddr): SocketAddr | null {
  if (addr.kind !== 'tcp' || addr.port === 0) return null;
  const family = net.isIP(addr.host);
  if (family === 0) return null;
  // Canonical text (`0:0::1` is `::1` to getsockname); IPv4-mapped forms are left to the kernel.
  const host =
    family === 4
      ? addr.host
      : addr.host.includes('.')
        ? ''
        : new net.SocketAddress({ address: addr.host, family: 'ipv6' }).address;
  if (host === '' || host === '0.0.0.0' || host === '::') return null;
  return Object.freeze({ host, port: addr.port });
}

/** An accepted client connection. */
export class IngressConnection implements IngressContext, LogFieldSource {
  readonly id = newId('c');
  readonly endpoint: EndpointState;
  /** The client: the socket's peer, or the source a PROXY protocol header names (set once, before any hook after the header). */
  client: SocketAddr;
  readonly peer: SocketAddr;
  readonly local: SocketAddr;
  readonly protocol: IngressProtocol;
  readonly startedAt = performance.now();
  #ext: object | null;
  /** The app's state (`ext.ts`): built by its factory, or an empty object made on first use. */
  get ext(): object {
    if (this.#ext === null) this.#ext = {};
    return this.#ext;
  }
  /** The PROXY protocol header the connection (or session) opened with, or null. */
  proxyHeader: ProxyHeader | null = null;
  /** The accepted socket; null for a datagram session (its on-ramp's socket is shared). */
  readonly socket: net.Socket | null;
  /** Set by the TLS on-ramp once a client certificate verified (see `IngressContext`). */
  clientIdentity: ClientIdentity | null = null;
  /** The connection's telemetry context (forked log with conn fields, its own trace). */
  telemetry: TelemetryContext | null = null;
  requests = 0;
  /** Tunnels running on this connection; a drain waits for them. */
  tunnels = 0;
  closeReason = 'client_closed';
  closed = false;
  /**
   * Ends a connection that has no socket here (a `tcp` endpoint's raw accept,
   * `onramps/tcp/raw-accept.ts`): what a drain calls at its deadline instead of destroying it.
   */
  abort: (() => void) | null = null;

  /** `from` is the accepted socket, or a datagram session's addresses. */
  constructor(
    endpoint: EndpointState,
    from: net.Socket | { readonly peer: SocketAddr; readonly local: SocketAddr },
    protocol: IngressProtocol,
    ext: ErasedExtFactories,
  ) {
    this.endpoint = endpoint;
    this.protocol = protocol;
    if (from instanceof net.Socket) {
      this.socket = from;
      this.peer = { host: from.remoteAddress ?? '', port: from.remotePort ?? 0 };
      this.local = endpoint.localAddr ?? { host: from.localAddress ?? '', port: from.localPort ?? 0 };
    } else {
      this.socket = null;
      this.peer = from.peer;
      this.local = from.local;
    }
    this.client = this.peer;
    this.#ext = newExt(ext.ingress);
  }

  /**
   * Takes the client from a PROXY header: its source, when the header carries addresses (a
   * LOCAL command or UNSPEC family leaves the socket's peer as the client).
   */
  setProxyHeader(header: ProxyHeader): void {
    this.proxyHeader = header;
    const a = header.addresses;
    if (a !== null && a.family !== 'unix') this.client = a.source;
  }

  /** The log fields of the connection's telemetry context, computed when a record needs them. */
  logFields(): Record<string, unknown> {
    return {
      conn_id: this.id,
      endpoint: this.endpoint.name,
      client: formatAddr(this.client),
    };
  }
}

/**
 * An empty array with room for three elements. V8 gives an empty array 17 slots on its first
 * push (184 bytes), kept for as long as the array lives: a tunnel's request lives as long as the
 * tunnel and records one to three decisions. Popping keeps the capacity (64–72 bytes).
 */
function smallArray(): string[] {
  const a = ['', '', ''];
  a.pop();
  a.pop();
  a.pop();
  return a;
}

/** One request (CONNECT, absolute-form or Upgrade). */
export class RequestState implements RequestContext, LogFieldSource {
  readonly id = newId('r');
  readonly ingress: IngressConnection;
  readonly kind: RequestKind;
  /** The tunnel's request id for a request read inside a tunnel; null otherwise. */
  parentId: string | null = null;
  readonly method: string;
  readonly target: SocketAddr;
  readonly startedAt = performance.now();
  #ext: object | null;
  /** The app's state (`ext.ts`): built by its factory, or an empty object made on first use. */
  get ext(): object {
    if (this.#ext === null) this.#ext = {};
    return this.#ext;
  }
  /** Decisions taken, for the audit record. */
  readonly decisions: string[] = smallArray();
  /**
   * Where {@link upstream} is kept. Not a private field: `composeApps` hands hooks a view whose
   * prototype is this object, and an accessor reading `#x` through such a view throws.
   */
  upstreamAddr: string | null = null;
  /**
   * `ip:port` of the upstream connection the request went out on (made or reused), or null
   * until there is one. Setting it the first time stamps {@link connectedAt}.
   */
  get upstream(): string | null {
    return this.upstreamAddr;
  }
  set upstream(addr: string | null) {
    if (this.connectedAt === 0 && addr !== null) this.connectedAt = performance.now();
    this.upstreamAddr = addr;
  }
  /** True when the upstream connection came from the keep-alive pool. */
  upstreamReused = false;
  /** What an `https` origin chose in ALPN (`h2`, `http/1.1`); null in the clear or before TLS. */
  upstreamProtocol: 'h2' | 'http/1.1' | null = null;
  /** `performance.now()` when the upstream connection was ready; 0 until then. */
  connectedAt = 0;
  /** `performance.now()` when the upstream's response head arrived; 0 until then (or for a tunnel). */
  respondedAt = 0;
  /**
   * `performance.now()` when the unit ended, when that was before JS heard of it (a tunnel the
   * addon ran, reported in a batch); 0: it ends when recorded.
   */
  endedAt = 0;
  /** What failed the request, when a flow knows more than its close reason (`record.ts`). */
  error: unknown = null;
  status = 0;
  telemetry: TelemetryContext | null = null;

  constructor(
    ingress: IngressConnection,
    kind: RequestKind,
    method: string,
    target: SocketAddr,
    ext: ErasedExtFactories,
  ) {
    this.ingress = ingress;
    this.kind = kind;
    this.method = method;
    this.target = target;
    this.#ext = newExt(ext.request);
  }

  /** The log fields a request adds to its connection's, computed when a record needs them. */
  logFields(): Record<string, unknown> {
    return { request_id: this.id };
  }
}

/** One upstream connection being made. */
export class EgressState implements EgressContext {
  readonly id = newId('e');
  readonly ingress: IngressConnection;
  readonly request: RequestState | null;
  readonly target: SocketAddr;
  #ext: object | null;
  /** The app's state (`ext.ts`): built by its factory, or an empty object made on first use. */
  get ext(): object {
    if (this.#ext === null) this.#ext = {};
    return this.#ext;
  }

  constructor(
    ingress: IngressConnection,
    request: RequestState | null,
    target: SocketAddr,
    ext: ErasedExtFactories,
  ) {
    this.ingress = ingress;
    this.request = request;
    this.target = target;
    this.#ext = newExt(ext.egress);
  }
}
