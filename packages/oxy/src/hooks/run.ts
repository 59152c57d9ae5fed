/**
 * The hooks an app returns from `start()`, and their resolution into a flat table of bound
 * methods. Resolution happens once, at start-up: it rejects unknown hook groups and method
 * names (a typo would otherwise silently never fire, fastify's `validate`), binds each method
 * to its object, and leaves `null` where the app implements nothing. Call sites then pay one
 * `!== null` branch and no `await` for an absent hook (pino's habit).
 *
 * Each present decision-returning method is wrapped once so that what it returns is checked
 * (`validate.ts`): a decision the framework does not know fails that request or connection
 * closed, as a throw would. Event methods are bound as they are.
 *
 * When a test asks for it (`record`), each present method is wrapped to report its calls, so
 * tests can assert the order in which hooks fired.
 */
import type dgram from 'node:dgram';
import type { Duplex } from 'node:stream';
import type {
  ClientIdentity,
  ConnectionStats,
  EgressContext,
  ExtTypes,
  IngressContext,
  RequestContext,
  SocketAddr,
} from '../context/contexts.ts';
import { OXY_ERR, OxyError } from '../errors.ts';
import type { ProxyHeader } from '../protocols/proxy-protocol/types.ts';
import {
  DATAGRAM_HOOK_METHODS,
  type DatagramDirection,
  type DatagramHook,
  type DatagramVerdict,
} from './datagram.ts';
import { EGRESS_HOOK_METHODS, type EgressDecision, type EgressHook } from './egress.ts';
import { type BodyFilter, HTTP_BODY_HOOK_METHODS, type HttpBodyHook } from './http-body.ts';
import {
  type ConnectDirective,
  HTTP_REQUEST_HOOK_METHODS,
  type HttpRequestHook,
  type RequestDecision,
  type RequestEndInfo,
  type RequestHead,
  type ResponseHead,
} from './http-request.ts';
import { INGRESS_HOOK_METHODS, type IngressDecision, type IngressHook } from './ingress.ts';
import {
  IP_FLOW_HOOK_METHODS,
  IP_TUNNEL_HOOK_METHODS,
  type IpDirection,
  type IpFlowDecision,
  type IpFlowEndInfo,
  type IpFlowHook,
  type IpFlowView,
  type IpPacketVerdict,
  type IpTunnelHook,
} from './ip.ts';
import { type AppLifecycleHook, LIFECYCLE_HOOK_METHODS } from './lifecycle.ts';
import { PROXY_PROTOCOL_HOOK_METHODS, type ProxyProtocolHook } from './proxy-protocol.ts';
import {
  type CertificateChoice,
  type ClientIdentityDecision,
  TLS_HOOK_METHODS,
  type TlsHook,
} from './tls.ts';
import {
  type AppTunnelPipeline,
  TUNNEL_HOOK_METHODS,
  type TunnelDecision,
  type TunnelHook,
  type TunnelStart,
} from './tunnel.ts';
import { checked } from './validate.ts';

/** The hooks an app implements, returned by its `start()`. Every group is optional. */
export interface Hooks<X extends ExtTypes = ExtTypes> {
  readonly lifecycle?: AppLifecycleHook;
  readonly ingress?: IngressHook<X>;
  readonly proxyProtocol?: ProxyProtocolHook<X>;
  readonly httpRequest?: HttpRequestHook<X>;
  readonly httpBody?: HttpBodyHook<X>;
  readonly tunnel?: TunnelHook<X>;
  readonly datagram?: DatagramHook<X>;
  readonly egress?: EgressHook<X>;
  readonly tls?: TlsHook<X>;
  readonly ipTunnel?: IpTunnelHook<X>;
  readonly ipFlow?: IpFlowHook<X>;
}

/** The hook groups and the methods each may have: hook names as data. */
export const HOOK_METHODS = {
  lifecycle: LIFECYCLE_HOOK_METHODS,
  ingress: INGRESS_HOOK_METHODS,
  proxyProtocol: PROXY_PROTOCOL_HOOK_METHODS,
  httpRequest: HTTP_REQUEST_HOOK_METHODS,
  httpBody: HTTP_BODY_HOOK_METHODS,
  tunnel: TUNNEL_HOOK_METHODS,
  datagram: DATAGRAM_HOOK_METHODS,
  egress: EGRESS_HOOK_METHODS,
  tls: TLS_HOOK_METHODS,
  ipTunnel: IP_TUNNEL_HOOK_METHODS,
  ipFlow: IP_FLOW_HOOK_METHODS,
} as const;

/** The interface name of each group, as logs and errors spell it. */
const GROUP_NAMES: Readonly<Record<keyof Hooks, string>> = {
  lifecycle: 'AppLifecycleHook',
  ingress: 'IngressHook',
  proxyProtocol: 'ProxyProtocolHook',
  httpRequest: 'HttpRequestHook',
  httpBody: 'HttpBodyHook',
  tunnel: 'TunnelHook',
  datagram: 'DatagramHook',
  egress: 'EgressHook',
  tls: 'TlsHook',
  ipTunnel: 'IpTunnelHook',
  ipFlow: 'IpFlowHook',
};

type Maybe<T> = T | Promise<T>;

/** The resolved hooks: each method bound to its object, or `null` when the app has none. */
export interface ResolvedHooks {
  readonly stateForRestart: (() => Maybe<unknown>) | null;
  readonly handleShutdown: (() => Maybe<void>) | null;
  readonly ingressConnection: ((ctx: IngressContext) => Maybe<IngressDecision>) | null;
  readonly ingressConnectionClose: ((stats: ConnectionStats, ctx: IngressContext) => void) | null;
  readonly proxyProtocolConnection:
    | ((header: ProxyHeader, ctx: IngressContext) => Maybe<IngressDecision>)
    | null;
  readonly proxyConnectRequest: ((head: RequestHead, ctx: RequestContext) => Maybe<ConnectDirective>) | null;
  readonly proxyConnectResponse:
    | ((res: ResponseHead, ctx: RequestContext) => Maybe<ResponseHead | undefined>)
    | null;
  readonly request: ((head: RequestHead, ctx: RequestContext) => Maybe<RequestDecision>) | null;
  readonly response: ((res: ResponseHead, ctx: RequestContext) => Maybe<ResponseHead | undefined>) | null;
  readonly requestEnd: ((info: RequestEndInfo, ctx: RequestContext) => void) | null;
  readonly requestBodyFilter: ((head: RequestHead, ctx: RequestContext) => BodyFilter | undefined) | null;
  readonly responseBodyFilter: ((res: ResponseHead, ctx: RequestContext) => BodyFilter | undefined) | null;
  readonly tunnelStart: ((first: TunnelStart, ctx: RequestContext) => Maybe<TunnelDecision>) | null;
  readonly appTunnelPipeline:
    | ((ctx: RequestContext, egress: EgressContext) => Maybe<AppTunnelPipeline | undefined>)
    | null;
  readonly datagram:
    | ((data: Uint8Array, direction: DatagramDirection, ctx: RequestContext) => DatagramVerdict | undefined)
    | null;
  readonly egressConnection: ((target: SocketAddr, ctx: EgressContext) => Maybe<EgressDecision>) | null;
  readonly egressEstablished: ((upstream: SocketAddr, ctx: EgressContext) => void) | null;
  readonly upstreamIps: ((ips: string[], ctx: EgressContext) => Maybe<string[]>) | null;
  readonly dnsResolveOverride: ((host: string, ctx: EgressContext) => Maybe<string[] | undefined>) | null;
  readonly tcpConnectOverride:
    | ((addrs: readonly SocketAddr[], ctx: EgressContext) => Maybe<Duplex | undefined>)
    | null;
  readonly selectUpstream:
    | ((target: SocketAddr, ctx: EgressContext) => Maybe<readonly string[] | undefined>)
    | null;
  readonly udpConnectOverride:
    | ((addrs: readonly SocketAddr[], ctx: EgressContext) => Maybe<dgram.Socket | undefined>)
    | null;
  readonly tlsSelectCertificate: ((sni: string, ctx: IngressContext) => Maybe<CertificateChoice>) | null;
  readonly tlsClientIdentity:
    | ((identity: ClientIdentity | null, ctx: IngressContext) => Maybe<ClientIdentityDecision>)
    | null;
  readonly ipTunnel: ((context: Uint8Array, ctx: IngressContext) => Maybe<IngressDecision>) | null;
  readonly ipFlow: ((flow: IpFlowView, ctx: IngressContext) => Maybe<IpFlowDecision>) | null;
  readonly ipPacket:
    | ((
        packet: Buffer,
        direction: IpDirection,
        flow: IpFlowView,
        ctx: IngressContext,
      ) => IpPacketVerdict | undefined)
    | null;
  readonly ipFlowEnd: ((flow: IpFlowView, info: IpFlowEndInfo, ctx: IngressContext) => void) | null;
}

/** One recorded hook call: `IngressHook.handleConnection` and the id of the context it got. */
export interface HookCall {
  readonly hook: string;
  readonly contextId: string | undefined;
}

/** Options of {@link resolveHooks}. */
export interface ResolveOptions {
  /** Called before each hook method runs (tests only; nothing is wrapped without it). */
  readonly record?: (call: HookCall) => void;
}

/** All method names of an object, own and inherited (class instances keep methods on the prototype). */
function methodNames(obj: object): string[] {
  const names = new Set<string>();
  for (let o: object | null = obj; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key !== 'constructor' && typeof (obj as Record<string, unknown>)[key] === 'function')
        names.add(key);
    }
  }
  return [...names];
}

function contextIdOf(args: unknown[]): string | undefined {
  for (let i = args.length - 1; i >= 0; i--) {
    const a = args[i] as { id?: unknown } | null;
    if (typeof a === 'object' && a !== null && typeof a.id === 'string') return a.id;
  }
  return undefined;
}

/**
 * Checks the hooks an app returned and resolves them into a {@link ResolvedHooks} table.
 * Throws `OXY_ERR_INVALID_HOOK` naming the group and method for anything unknown.
 */
export function resolveHooks(hooks: Hooks, options: ResolveOptions = {}): ResolvedHooks {
  if (typeof hooks !== 'object' || hooks === null) {
    throw new OxyError(OXY_ERR.INVALID_HOOK, 'start() must return an object of hooks (or {})');
  }
  for (const group of Object.keys(hooks)) {
    if (!(group in HOOK_METHODS)) {
      throw new OxyError(
        OXY_ERR.INVALID_HOOK,
        `hooks.${group} is not a hook group (known: ${Object.keys(HOOK_METHODS).join(', ')})`,
      );
    }
    const obj = (hooks as Record<string, unknown>)[group];
    if (obj === undefined || obj === null) continue;
    if (typeof obj !== 'object') {
      throw new OxyError(OXY_ERR.INVALID_HOOK, `hooks.${group} must be an object with hook methods`);
    }
    const known: readonly string[] = HOOK_METHODS[group as keyof Hooks];
    for (const name of methodNames(obj)) {
      if (!known.includes(name)) {
        throw new OxyError(
          OXY_ERR.INVALID_HOOK,
          `hooks.${group}.${name} is not a ${GROUP_NAMES[group as keyof Hooks]} method (known: ${known.join(', ')})`,
        );
      }
    }
  }
  const record = options.record;
  // biome-ignore lint/suspicious/noExplicitAny: erased method table built from checked names
  const bind = (group: keyof Hooks, method: string): any => {
    const obj = hooks[group] as Record<string, unknown> | undefined;
    const fn = obj?.[method];
    if (typeof fn !== 'function') return null;
    const hook = `${GROUP_NAMES[group]}.${method}`;
    const bound = checked(`${group}.${method}`, hook, fn.bind(obj));
    if (record === undefined) return bound;
    return (...args: unknown[]) => {
      record({ hook, contextId: contextIdOf(args) });
      return bound(...args);
    };
  };
  return {
    stateForRestart: bind('lifecycle', 'stateForRestart'),
    handleShutdown: bind('lifecycle', 'handleShutdown'),
    ingressConnection: bind('ingress', 'handleConnection'),
    ingressConnectionClose: bind('ingress', 'handleConnectionClose'),
    proxyProtocolConnection: bind('proxyProtocol', 'handleConnection'),
    proxyConnectRequest: bind('httpRequest', 'handleProxyConnectRequest'),
    proxyConnectResponse: bind('httpRequest', 'handleProxyConnectResponse'),
    request: bind('httpRequest', 'handleRequest'),
    response: bind('httpRequest', 'handleResponse'),
    requestEnd: bind('httpRequest', 'handleRequestEnd'),
    requestBodyFilter: bind('httpBody', 'getRequestBodyFilter'),
    responseBodyFilter: bind('httpBody', 'getResponseBodyFilter'),
    tunnelStart: bind('tunnel', 'handleTunnelStart'),
    appTunnelPipeline: bind('tunnel', 'getAppTunnelPipeline'),
    datagram: bind('datagram', 'handleDatagram'),
    egressConnection: bind('egress', 'handleConnection'),
    egressEstablished: bind('egress', 'handleConnectionEstablished'),
    upstreamIps: bind('egress', 'handleUpstreamIps'),
    dnsResolveOverride: bind('egress', 'dnsResolveOverride'),
    tcpConnectOverride: bind('egress', 'tcpConnectOverride'),
    selectUpstream: bind('egress', 'selectUpstream'),
    udpConnectOverride: bind('egress', 'udpConnectOverride'),
    tlsSelectCertificate: bind('tls', 'selectCertificate'),
    tlsClientIdentity: bind('tls', 'handleClientIdentity'),
    ipTunnel: bind('ipTunnel', 'handleTunnel'),
    ipFlow: bind('ipFlow', 'handleFlow'),
    ipPacket: bind('ipFlow', 'handlePacket'),
    ipFlowEnd: bind('ipFlow', 'handleFlowEnd'),
  };
}

/** Hooks of an app that implements none: every method `null`. */
export const NO_HOOKS: ResolvedHooks = resolveHooks({});
