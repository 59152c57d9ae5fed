/**
 * Which fast paths of the one pipeline apply to an app, decided once at start-up from the hooks
 * it implements and its settings, in this one place. A fast path is an optimisation of the
 * pipeline (the addon running a whole tunnel, pooling upstream connections across clients,
 * forwarding without the hook stages), never a second pipeline: it may only be taken when no
 * hook the app implements would have run on the way it skips.
 *
 * Ordering rule: `planFastPaths` runs when the runtime is built, after `resolveHooks` and before
 * any endpoint listens; call sites read the plan and never test hooks themselves.
 *
 * {@link DISABLES} lists every resolved hook method, so a hook added to `ResolvedHooks` does not
 * compile until someone says which fast paths it turns off.
 */
import type { ResolvedHooks } from './hooks/run.ts';

/** The fast paths, each true when it may be taken. */
export interface FastPaths {
  /**
   * A tunnel (CONNECT, `tcp` endpoint) whose egress is a direct connection to one address runs
   * whole on the addon's reactor thread: connect, answer, splice. The egress decision, DNS and
   * the IP hook still run in JS before it; nothing may need JS between connect and splice.
   */
  readonly wholeTunnel: boolean;
  /**
   * Connections are accepted on the addon's side (a `tcp` endpoint's raw accept, an `http`
   * endpoint's connect mode) and never become JS sockets unless handed back: no connection-level
   * hook may need to see them. Implies {@link wholeTunnel}.
   */
  readonly reactorAccept: boolean;
  /**
   * Upstream HTTP connections are pooled across clients: no egress hook can tell one client's
   * connection from another's. Otherwise each client connection has a pool of its own.
   */
  readonly sharedPool: boolean;
  /**
   * No hook may rewrite a forwarded exchange (no request or response hook; body hooks must turn
   * this off too): the exchange engine skips those stages and the response body stage.
   */
  readonly leanForward: boolean;
  /**
   * No hook sees or rewrites a forwarded request's head or its request body (a response body
   * filter may watch the response body): the native HTTP/1.1 engine may serve the exchange, and
   * gives a response body filter the body's chunks itself (`onramps/http1/native-body.ts`).
   */
  readonly nativeForward: boolean;
  /** The egress decision is the default one (no `EgressHook.handleConnection`): known without an await. */
  readonly defaultEgress: boolean;
  /** An IP-literal target needs no promise (no `handleUpstreamIps` to await). */
  readonly literalEgress: boolean;
  /**
   * Datagrams are forwarded straight from the receive batch (no view, no hook call), and the
   * replies of one batch go back to their client in one sendmmsg.
   */
  readonly rawDatagrams: boolean;
  /**
   * An intercepted CONNECT tunnel whose requests an idle verified connection of the pool will
   * carry is answered without an upstream connection of its own; one is made only when its
   * first bytes say the pool cannot serve it (`tunnels/inspect.ts`). Off when a hook must see
   * each tunnel's connection before the answer, or decides per tunnel what its bytes become.
   */
  readonly lateTunnelConnect: boolean;
}

/** The name of each fast path. */
export type FastPath = keyof FastPaths;

/**
 * For every resolved hook method, the fast paths its presence turns off. Keyed by every member
 * of {@link ResolvedHooks}: a new hook must be listed here to compile.
 */
export const DISABLES: { readonly [K in keyof ResolvedHooks]-?: readonly FastPath[] } = {
  stateForRestart: [],
  handleShutdown: [],
  // Both see every accepted connection as a JS socket, which the addon's accept never makes.
  ingressConnection: ['reactorAccept'],
  ingressConnectionClose: ['reactorAccept'],
  proxyProtocolConnection: [],
  // TLS clients never take the whole tunnel (the addon splices plain TCP only).
  tlsSelectCertificate: [],
  tlsClientIdentity: [],
  proxyConnectRequest: [],
  // Rewrites the 2xx the addon would write itself.
  proxyConnectResponse: ['wholeTunnel'],
  request: ['leanForward', 'nativeForward'],
  response: ['leanForward', 'nativeForward'],
  // The lean path streams no body through JS stages; the native engine filters response bodies only.
  requestBodyFilter: ['leanForward', 'nativeForward'],
  responseBodyFilter: ['leanForward'],
  // An event after the end: every path fires it (`flows/record.ts`).
  requestEnd: [],
  // Reads the client's first bytes in JS before deciding how the tunnel runs (and may pass
  // through what the default would intercept).
  tunnelStart: ['wholeTunnel', 'lateTunnelConnect'],
  // The app moves the bytes.
  appTunnelPipeline: ['wholeTunnel'],
  // Sees (and may rewrite) every datagram.
  datagram: ['rawDatagrams'],
  egressConnection: ['sharedPool', 'defaultEgress', 'lateTunnelConnect'],
  // Fires between connect and answer, and may fail the connection.
  egressEstablished: ['wholeTunnel', 'sharedPool', 'lateTunnelConnect'],
  upstreamIps: ['sharedPool', 'literalEgress'],
  dnsResolveOverride: ['sharedPool'],
  // Replaces the connect the addon would make.
  tcpConnectOverride: ['wholeTunnel', 'sharedPool', 'lateTunnelConnect'],
  // Chooses (and retries) the upstream per connection, in JS; may answer later.
  selectUpstream: ['wholeTunnel', 'sharedPool', 'literalEgress', 'lateTunnelConnect'],
  // A session whose socket the app made sends each datagram on its own (no batch to the
  // addon's socket); a session without one keeps the raw path, so nothing is turned off.
  udpConnectOverride: [],
  // The layer-3 hooks run in the IP pipeline only, which has no fast path of its own here:
  // each is tested for presence once per tunnel, flow or packet there.
  ipTunnel: [],
  ipFlow: [],
  // Sees (and may rewrite) every packet of upgraded flows; upgraded UDP flows' datagrams are
  // still carried by the datagram runner as bytes, so raw datagrams stay on.
  ipPacket: [],
  ipFlowEnd: [],
};

/** What besides the hooks decides the plan. */
export interface FastPathInputs {
  readonly hooks: ResolvedHooks;
  /** The app declares per-egress-connection state (each connection is its own). */
  readonly egressExt: boolean;
  /** `egress.upstream_proxy` is on: the default decision goes through another proxy. */
  readonly defaultProxy: boolean;
  /**
   * Some `http` endpoint sets `max_response_body`: responses must pass the body stage that
   * counts them (`flows/http/body-stage.ts`), which the lean path does not run.
   */
  readonly responseBodyLimit?: boolean;
  /** `interception.enabled`: every CONNECT tunnel's first bytes are read in JS. */
  readonly interception?: boolean;
}

/** Decides the fast paths for an app. */
export function planFastPaths(inputs: FastPathInputs): FastPaths {
  const plan: Record<FastPath, boolean> = {
    wholeTunnel: true,
    reactorAccept: true,
    sharedPool: true,
    leanForward: true,
    nativeForward: true,
    defaultEgress: true,
    literalEgress: true,
    rawDatagrams: true,
    lateTunnelConnect: true,
  };
  for (const method of Object.keys(DISABLES) as (keyof ResolvedHooks)[]) {
    if (inputs.hooks[method] === null) continue;
    for (const path of DISABLES[method]) plan[path] = false;
  }
  // Each egress connection is its own: no tunnel leans on another's.
  if (inputs.egressExt) {
    plan.sharedPool = false;
    plan.lateTunnelConnect = false;
  }
  // The default decision is `viaProxy`, which the addon does not speak, and whose tunnels the
  // pool of direct connections does not serve.
  if (inputs.defaultProxy) {
    plan.wholeTunnel = false;
    plan.lateTunnelConnect = false;
  }
  if (inputs.responseBodyLimit === true) {
    plan.leanForward = false;
    plan.nativeForward = false;
  }
  if (inputs.interception === true) plan.wholeTunnel = false;
  // The addon's accept runs each connection as a whole tunnel.
  if (!plan.wholeTunnel) plan.reactorAccept = false;
  return plan;
}
