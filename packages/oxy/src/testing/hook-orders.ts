/**
 * The order in which hooks fire for each kind of traffic, kept as data in one place so that two
 * things read the same list: `scripts/gen-hooks-doc.ts` draws each flow as a mermaid sequence
 * diagram in `docs/hooks.md`, and `test/hook-order.test.ts` drives the same traffic through a
 * real proxy with {@link tracingHooks} and asserts that the recorded order equals
 * {@link HOOK_ORDERS} exactly. The diagram cannot drift from what the proxy does.
 *
 * A flow is a list of steps: hook calls (checked by the test), and wire messages and notes
 * (narrative for the diagram, not checked). The recorded traffic uses a target named
 * `localhost` so that the name-only step `egress.dnsResolveOverride` shows; an IP literal
 * skips it.
 */
import type { SocketAddr } from '../context/contexts.ts';
import { EgressDecision } from '../hooks/egress.ts';
import { ConnectDirective, RequestDecision } from '../hooks/http-request.ts';
import { IngressDecision } from '../hooks/ingress.ts';
import { IpFlowDecision } from '../hooks/ip.ts';
import type { HOOK_METHODS, Hooks } from '../hooks/run.ts';
import { TunnelDecision } from '../hooks/tunnel.ts';
import type { GROUP_LABELS } from './recorder.ts';

type Groups = typeof HOOK_METHODS;

/** A hook as the recorder names it: `ingress.handleConnection`, `http.handleRequest`, … */
export type HookName = {
  [G in keyof Groups]: `${(typeof GROUP_LABELS)[G]}.${Groups[G][number]}`;
}[keyof Groups];

/** Who takes part in a flow, as the diagram names them. */
export type Participant = 'Client' | 'Oxy' | 'App hooks' | 'Upstream';

/** One step of a flow. */
export type FlowStep =
  /** Oxy calls a hook; `answer` is what the default answer means, drawn as the reply. */
  | { readonly hook: HookName; readonly answer?: string }
  /** Bytes on a wire, for the reader; not checked. */
  | { readonly from: Participant; readonly to: Participant; readonly message: string }
  /** Something Oxy does on its own between hooks; not checked. */
  | { readonly note: string };

/** A kind of traffic and the steps it goes through. */
export interface TrafficFlow {
  /** Heading in the generated reference. */
  readonly title: string;
  /** One or two sentences on what the client does. */
  readonly description: string;
  readonly steps: readonly FlowStep[];
}

const TCP_ACCEPT: readonly FlowStep[] = [
  { from: 'Client', to: 'Oxy', message: 'TCP connect' },
  { hook: 'ingress.handleConnection', answer: 'allow' },
];

/** The egress steps for a new upstream connection to a name, with every default taken. */
const EGRESS_CONNECT: readonly FlowStep[] = [
  { hook: 'egress.handleConnection', answer: 'direct(target)' },
  { hook: 'egress.selectUpstream', answer: 'undefined: the target itself' },
  { hook: 'egress.dnsResolveOverride', answer: 'undefined: built-in resolver' },
  { hook: 'egress.handleUpstreamIps', answer: 'the addresses as given' },
  { note: 'egress.blocked_cidrs check' },
  { hook: 'egress.tcpConnectOverride', answer: 'undefined: Happy Eyeballs' },
  { from: 'Oxy', to: 'Upstream', message: 'TCP connect' },
  { hook: 'egress.handleConnectionEstablished' },
];

const CONNECT_TUNNEL: readonly FlowStep[] = [
  { hook: 'http.handleProxyConnectResponse', answer: 'undefined: plain 200' },
  { from: 'Oxy', to: 'Client', message: '200 Connection established' },
  { from: 'Client', to: 'Oxy', message: 'first bytes (a ClientHello, a request line, …)' },
  { hook: 'tunnel.handleTunnelStart', answer: 'passThrough (or intercept / http / block)' },
  { hook: 'tunnel.getAppTunnelPipeline', answer: "undefined: Oxy's pump" },
  { from: 'Oxy', to: 'Upstream', message: 'bytes' },
  { from: 'Upstream', to: 'Oxy', message: 'bytes' },
  { from: 'Oxy', to: 'Client', message: 'bytes' },
];

const CLIENT_CLOSE: readonly FlowStep[] = [
  { from: 'Client', to: 'Oxy', message: 'close' },
  { hook: 'ingress.handleConnectionClose' },
];

/** The response head through `handleResponse`, then the response body's filter is chosen. */
const RESPONSE_HEAD: readonly FlowStep[] = [
  { from: 'Upstream', to: 'Oxy', message: '200 head' },
  { hook: 'http.handleResponse', answer: 'undefined: the response as received' },
  { hook: 'httpBody.getResponseBodyFilter', answer: 'undefined: the body streams untouched' },
];

/** The end of a request: its audit record and the event, once the response is complete. */
const REQUEST_END: FlowStep = { hook: 'http.handleRequestEnd' };

/**
 * A tunnel's client closes: the client connection's close hook fires first, then the tunnel
 * (whose upstream side is closed after it) ends with its record and event.
 */
const TUNNEL_CLOSE: readonly FlowStep[] = [
  ...CLIENT_CLOSE,
  { note: 'the upstream side is closed: the tunnel ends' },
  REQUEST_END,
];

/** One CONNECT stream on an HTTP/2 session, from its HEADERS to the tunnel's bytes. */
const H2_CONNECT_STREAM: readonly FlowStep[] = [
  { from: 'Client', to: 'Oxy', message: 'HEADERS :method CONNECT :authority localhost:port' },
  { hook: 'http.handleProxyConnectRequest', answer: 'allow' },
  ...EGRESS_CONNECT,
  ...CONNECT_TUNNEL.map((s) =>
    'message' in s && s.message.startsWith('200') ? { ...s, message: 'HEADERS :status 200' } : s,
  ),
  { from: 'Client', to: 'Oxy', message: 'END_STREAM' },
  REQUEST_END,
];

/** Every kind of traffic whose hook order is documented and checked. */
export const TRAFFIC_FLOWS = {
  connect_http1: {
    title: 'CONNECT tunnel over HTTP/1.1',
    description:
      'A client opens a connection, sends `CONNECT localhost:port HTTP/1.1`, exchanges bytes ' +
      'through the tunnel and closes.',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'CONNECT localhost:port' },
      { hook: 'http.handleProxyConnectRequest', answer: 'allow' },
      ...EGRESS_CONNECT,
      ...CONNECT_TUNNEL,
      ...TUNNEL_CLOSE,
    ],
  },
  forward_http1: {
    title: 'Absolute-form request (forwarded)',
    description:
      'A client sends `GET http://localhost:port/x HTTP/1.1` on a new connection; Oxy forwards ' +
      'it on a new upstream connection (a pooled one would skip the egress steps after ' +
      '`egress.handleConnection`).',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'GET http://localhost:port/x' },
      { hook: 'http.handleRequest', answer: 'forward' },
      ...EGRESS_CONNECT,
      { from: 'Oxy', to: 'Upstream', message: 'GET /x' },
      ...RESPONSE_HEAD,
      { from: 'Oxy', to: 'Client', message: '200 head and body' },
      REQUEST_END,
      ...CLIENT_CLOSE,
    ],
  },
  forward_http1_body: {
    title: 'Request with a body, through body filters',
    description:
      'A client sends `POST http://localhost:port/x` with a body on a new connection. The request ' +
      "body's filter is chosen right after `http.handleRequest` (before any egress hook, so a " +
      'body declared over `max_request_body` is answered 413 without connecting); each body then ' +
      'streams through its filter (`onChunk` per chunk, `onEnd` at the end; not hooks of their ' +
      'own, so not recorded) and the size limits.',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'POST http://localhost:port/x (head)' },
      { hook: 'http.handleRequest', answer: 'forward' },
      { hook: 'httpBody.getRequestBodyFilter', answer: 'undefined: the body streams untouched' },
      ...EGRESS_CONNECT,
      { from: 'Oxy', to: 'Upstream', message: 'POST /x (head)' },
      { from: 'Client', to: 'Oxy', message: 'body chunks' },
      { note: 'each chunk: limit, then filter.onChunk (observe, rewrite or stop); at the end filter.onEnd' },
      { from: 'Oxy', to: 'Upstream', message: 'body chunks (chunked if the filter rewrites)' },
      ...RESPONSE_HEAD,
      { from: 'Oxy', to: 'Client', message: '200 head' },
      { note: 'each chunk: limit, then filter.onChunk; at the end filter.onEnd' },
      { from: 'Oxy', to: 'Client', message: 'body chunks (chunked if the filter rewrites)' },
      REQUEST_END,
      ...CLIENT_CLOSE,
    ],
  },
  forward_http1_keepalive: {
    title: 'Two requests on one keep-alive connection (pooled upstream)',
    description:
      'A client sends two absolute-form requests to the same origin on one connection. The ' +
      'second reuses the pooled upstream connection: `egress.handleConnection` still fires for ' +
      'it, but resolution and connect do not. (With egress hooks installed the pool is kept per ' +
      'client connection, so another client connection connects anew.)',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'GET http://localhost:port/x' },
      { hook: 'http.handleRequest', answer: 'forward' },
      ...EGRESS_CONNECT,
      { from: 'Oxy', to: 'Upstream', message: 'GET /x' },
      ...RESPONSE_HEAD,
      { from: 'Oxy', to: 'Client', message: '200 head and body' },
      REQUEST_END,
      { from: 'Client', to: 'Oxy', message: 'GET http://localhost:port/x (same connection)' },
      { hook: 'http.handleRequest', answer: 'forward' },
      { hook: 'egress.handleConnection', answer: 'direct(target)' },
      { note: 'pooled upstream connection reused: no resolution, no connect' },
      { from: 'Oxy', to: 'Upstream', message: 'GET /x' },
      ...RESPONSE_HEAD,
      { from: 'Oxy', to: 'Client', message: '200 head and body' },
      REQUEST_END,
      ...CLIENT_CLOSE,
    ],
  },
  upgrade_http1: {
    title: '`Upgrade` through an absolute-form request (WebSocket-style)',
    description:
      'A client sends `GET http://localhost:port/ws` with `Connection: Upgrade` on a new ' +
      'connection; the upstream answers `101`, the connection becomes a tunnel, bytes go both ' +
      'ways and the client closes. The request goes out as a forwarded one (never on a pooled ' +
      'connection), its answer through `http.handleResponse`; after the `101` it is a tunnel ' +
      'without `tunnel.handleTunnelStart` (the protocol is already known). An answer other than ' +
      '`101` is relayed after `http.handleResponse` and the connection closed.',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'GET http://localhost:port/ws, Upgrade: echo' },
      { hook: 'http.handleRequest', answer: 'forward' },
      ...EGRESS_CONNECT,
      { from: 'Oxy', to: 'Upstream', message: 'GET /ws, Upgrade: echo' },
      { from: 'Upstream', to: 'Oxy', message: '101 Switching Protocols' },
      { hook: 'http.handleResponse', answer: 'undefined: the 101 as received (another status refuses it)' },
      { from: 'Oxy', to: 'Client', message: '101 Switching Protocols' },
      { hook: 'tunnel.getAppTunnelPipeline', answer: "undefined: Oxy's pump" },
      { from: 'Client', to: 'Oxy', message: 'bytes' },
      { from: 'Oxy', to: 'Upstream', message: 'bytes' },
      { from: 'Upstream', to: 'Oxy', message: 'bytes' },
      { from: 'Oxy', to: 'Client', message: 'bytes' },
      ...TUNNEL_CLOSE,
    ],
  },
  ingress_blocked: {
    title: 'Blocked connection (ingress block)',
    description:
      '`ingress.handleConnection` answers `IngressDecision.block(reason)`: Oxy closes the ' +
      'connection without reading from it, and the close hook still fires.',
    steps: [
      { from: 'Client', to: 'Oxy', message: 'TCP connect' },
      { hook: 'ingress.handleConnection', answer: 'block(reason)' },
      { from: 'Oxy', to: 'Client', message: 'close (nothing read)' },
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  connect_denied: {
    title: 'Refused CONNECT (request block)',
    description:
      '`http.handleProxyConnectRequest` answers `ConnectDirective.block(403, reason)`: no egress ' +
      'hook fires and the client gets the status.',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'CONNECT denied.localhost:443' },
      { hook: 'http.handleProxyConnectRequest', answer: 'block(403, reason)' },
      { from: 'Oxy', to: 'Client', message: '403 Forbidden' },
      REQUEST_END,
      ...CLIENT_CLOSE,
    ],
  },
  connect_blocked: {
    title: 'Blocked CONNECT (egress block)',
    description:
      '`egress.handleConnection` answers `EgressDecision.block(reason)`: nothing is resolved or ' +
      'connected, the client gets 403, and no tunnel hook fires.',
    steps: [
      ...TCP_ACCEPT,
      { from: 'Client', to: 'Oxy', message: 'CONNECT blocked.localhost:443' },
      { hook: 'http.handleProxyConnectRequest', answer: 'allow' },
      { hook: 'egress.handleConnection', answer: 'block(reason)' },
      { from: 'Oxy', to: 'Client', message: '403 Forbidden' },
      REQUEST_END,
      ...CLIENT_CLOSE,
    ],
  },
  connect_http2: {
    title: 'CONNECT stream over HTTP/2',
    description:
      'A client opens a cleartext HTTP/2 session (prior knowledge), opens one CONNECT stream ' +
      '(RFC 9113 §8.5), exchanges bytes and closes the session. The ingress hooks fire once per ' +
      'session; the request, egress and tunnel hooks once per stream.',
    steps: [
      ...TCP_ACCEPT,
      ...H2_CONNECT_STREAM,
      { from: 'Client', to: 'Oxy', message: 'GOAWAY, close' },
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  connect_http2_two_streams: {
    title: 'Two CONNECT streams, one after the other, on one HTTP/2 session',
    description:
      'As above, with a second CONNECT stream on the same session after the first ended: the ' +
      'request, egress and tunnel hooks run again for it, the ingress hooks do not.',
    steps: [
      ...TCP_ACCEPT,
      ...H2_CONNECT_STREAM,
      { note: 'stream 1 ended, session open' },
      ...H2_CONNECT_STREAM,
      { from: 'Client', to: 'Oxy', message: 'GOAWAY, close' },
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  tcp_endpoint: {
    title: 'A connection to a `tcp` endpoint',
    description:
      'A client connects to an endpoint with `protocol: tcp` and `tcp.target: localhost:port`: ' +
      'the connection is a tunnel to the target, through the same egress and tunnel hooks as a ' +
      'CONNECT (without the HTTP request hooks: there is no request).',
    steps: [
      ...TCP_ACCEPT,
      ...EGRESS_CONNECT,
      { from: 'Client', to: 'Oxy', message: 'first bytes' },
      { hook: 'tunnel.handleTunnelStart', answer: 'passThrough (or http / block)' },
      { hook: 'tunnel.getAppTunnelPipeline', answer: "undefined: Oxy's pump" },
      { from: 'Oxy', to: 'Upstream', message: 'bytes' },
      { from: 'Upstream', to: 'Oxy', message: 'bytes' },
      { from: 'Oxy', to: 'Client', message: 'bytes' },
      ...TUNNEL_CLOSE,
    ],
  },
  udp_session: {
    title: 'A datagram session on a `udp` endpoint',
    description:
      'A client sends one datagram to an endpoint with `protocol: udp` and `udp.target: ' +
      'localhost:port` and gets the answer; the session ends when it idles out. The ingress ' +
      'and egress hooks run once per session (`udpConnectOverride` in place of the TCP connect), the datagram ' +
      'hook once per datagram each way.',
    steps: [
      { from: 'Client', to: 'Oxy', message: 'datagram (new client address: new session)' },
      { hook: 'ingress.handleConnection', answer: 'allow' },
      { hook: 'egress.handleConnection', answer: 'direct(target)' },
      { hook: 'egress.dnsResolveOverride', answer: 'undefined: built-in resolver' },
      { hook: 'egress.handleUpstreamIps', answer: 'the addresses as given' },
      { note: 'egress.blocked_cidrs check' },
      { hook: 'egress.udpConnectOverride', answer: 'undefined: a connected UDP socket for the session' },
      { hook: 'egress.handleConnectionEstablished' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { from: 'Oxy', to: 'Upstream', message: 'datagram' },
      { from: 'Upstream', to: 'Oxy', message: 'datagram' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { from: 'Oxy', to: 'Client', message: 'datagram' },
      { note: 'udp.idle_timeout without a datagram: the session ends, its audit record is written' },
      REQUEST_END,
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  connect_udp_http2: {
    title: 'CONNECT-UDP (MASQUE) over HTTP/2',
    description:
      'A client opens a cleartext HTTP/2 session, opens one extended CONNECT stream with ' +
      '`:protocol connect-udp` (RFC 9298) to `localhost:port`, sends one datagram in a DATAGRAM ' +
      'capsule, gets the answer and closes the session. The request hook is the CONNECT one; ' +
      'the rest is the datagram runner of `udp` endpoints, and the 200 waits for its socket.',
    steps: [
      ...TCP_ACCEPT,
      {
        from: 'Client',
        to: 'Oxy',
        message:
          'HEADERS :method CONNECT :protocol connect-udp :path /.well-known/masque/udp/localhost/port/',
      },
      { note: 'checkMasqueRequest: framing, template, target (else 400 with Proxy-Status)' },
      { hook: 'http.handleProxyConnectRequest', answer: 'allow' },
      { hook: 'egress.handleConnection', answer: 'direct(target)' },
      { hook: 'egress.dnsResolveOverride', answer: 'undefined: built-in resolver' },
      { hook: 'egress.handleUpstreamIps', answer: 'the addresses as given' },
      { note: 'egress.blocked_cidrs check (403 destination_ip_prohibited)' },
      { hook: 'egress.udpConnectOverride', answer: 'undefined: a connected UDP socket' },
      { hook: 'egress.handleConnectionEstablished' },
      { from: 'Oxy', to: 'Client', message: 'HEADERS :status 200, capsule-protocol: ?1' },
      { from: 'Client', to: 'Oxy', message: 'DATAGRAM capsule (context 0)' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { from: 'Oxy', to: 'Upstream', message: 'datagram' },
      { from: 'Upstream', to: 'Oxy', message: 'datagram' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { from: 'Oxy', to: 'Client', message: 'DATAGRAM capsule (context 0)' },
      { from: 'Client', to: 'Oxy', message: 'END_STREAM, GOAWAY, close' },
      { note: 'the session ends (client_closed): its udp_session audit record is written' },
      REQUEST_END,
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  ip_tunnel_udp: {
    title: 'IP tunnel (SEQPACKET) with one upgraded UDP flow',
    description:
      'A client connects to an `ip_seqpacket` endpoint, sends its context, then one IPv4/UDP ' +
      'packet to 127.0.0.1:port; the flow is upgraded into a datagram session, the reply comes ' +
      'back as an IP packet, and the client closes the tunnel. An IP literal target skips ' +
      '`egress.dnsResolveOverride`.',
    steps: [
      { from: 'Client', to: 'Oxy', message: 'SEQPACKET connect' },
      { hook: 'ingress.handleConnection', answer: 'allow' },
      { from: 'Client', to: 'Oxy', message: 'first message: the context' },
      { hook: 'ipTunnel.handleTunnel', answer: 'allow' },
      { from: 'Client', to: 'Oxy', message: 'IPv4/UDP packet to 127.0.0.1:port' },
      { note: 'parse, reassemble, flow tracker: a new flow' },
      { hook: 'ipFlow.handleFlow', answer: 'upgrade' },
      { hook: 'ipFlow.handlePacket', answer: 'undefined: pass (up)' },
      { note: 'a datagram session of kind ip-udp in the datagram runner' },
      { hook: 'egress.handleConnection', answer: 'direct(target)' },
      { hook: 'egress.handleUpstreamIps', answer: 'the addresses as given' },
      { note: 'egress.blocked_cidrs check (ICMP administratively prohibited)' },
      { hook: 'egress.udpConnectOverride', answer: 'undefined: a connected UDP socket' },
      { hook: 'egress.handleConnectionEstablished' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { from: 'Oxy', to: 'Upstream', message: 'datagram' },
      { from: 'Upstream', to: 'Oxy', message: 'datagram' },
      { hook: 'datagram.handleDatagram', answer: 'undefined: pass' },
      { note: 'downgraded: buildUdpPacket from the flow destination to its source' },
      { hook: 'ipFlow.handlePacket', answer: 'undefined: pass (down)' },
      { from: 'Oxy', to: 'Client', message: 'IPv4/UDP reply packet' },
      { from: 'Client', to: 'Oxy', message: 'close' },
      { note: 'the flows end (shutdown): each session writes its udp_session audit record' },
      REQUEST_END,
      { hook: 'ipFlow.handleFlowEnd' },
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
  connect_ip_http2: {
    title: 'CONNECT-IP (MASQUE) over HTTP/2',
    description:
      'A client opens a cleartext HTTP/2 session, opens one extended CONNECT stream with ' +
      '`:protocol connect-ip` (RFC 9484) and scope `*`, gets its address and routes, pings the ' +
      'gateway in a DATAGRAM capsule, gets the reply and closes the session. The request hook is ' +
      'the CONNECT one; no upstream socket is opened for the tunnel itself: its packets go to the ' +
      'IP pipeline, whose own hooks run per flow.',
    steps: [
      ...TCP_ACCEPT,
      {
        from: 'Client',
        to: 'Oxy',
        message: 'HEADERS :method CONNECT :protocol connect-ip :path /.well-known/masque/ip/*/*/',
      },
      { note: 'checkMasqueRequest: framing, template, scope (else 400 with Proxy-Status)' },
      { hook: 'http.handleProxyConnectRequest', answer: 'allow' },
      { note: 'one address of each family from masque.ip_pool (none free: 503 connection_limit_reached)' },
      { from: 'Oxy', to: 'Client', message: 'HEADERS :status 200, capsule-protocol: ?1' },
      { from: 'Oxy', to: 'Client', message: 'ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT capsules' },
      { from: 'Client', to: 'Oxy', message: 'DATAGRAM capsule (context 0): ICMP echo to the gateway' },
      {
        note: 'checked: source = the assigned address, destination and protocol in scope; to the IP pipeline',
      },
      { from: 'Oxy', to: 'Client', message: 'DATAGRAM capsule (context 0): ICMP echo reply' },
      { from: 'Client', to: 'Oxy', message: 'END_STREAM, GOAWAY, close' },
      { note: 'the tunnel ends: pipeline closed, address released, its tunnel audit record written' },
      REQUEST_END,
      { hook: 'ingress.handleConnectionClose' },
    ],
  },
} as const satisfies Record<string, TrafficFlow>;

/** The kinds of traffic in {@link TRAFFIC_FLOWS}. */
export type TrafficKind = keyof typeof TRAFFIC_FLOWS;

/** The hooks a flow calls, in order (its hook steps only). */
export function hookOrder(flow: TrafficFlow): HookName[] {
  return flow.steps.flatMap((s) => ('hook' in s ? [s.hook] : []));
}

/** The exact hook order per kind of traffic, for one connection of an app that implements every hook. */
export const HOOK_ORDERS: Readonly<Record<TrafficKind, readonly HookName[]>> = Object.freeze(
  Object.fromEntries(
    Object.entries(TRAFFIC_FLOWS).map(([kind, flow]) => [kind, Object.freeze(hookOrder(flow))]),
  ) as Record<TrafficKind, readonly HookName[]>,
);

/** Per-group replacements for {@link tracingHooks}. */
export type HookOverrides = { readonly [G in keyof Hooks]?: Partial<NonNullable<Hooks[G]>> };

/**
 * Hooks that implement every method and answer what Oxy would do without them, so that a
 * recorded app shows every step a kind of traffic goes through. `overrides` replace single
 * methods (e.g. an `egress.handleConnection` that blocks one target).
 */
export function tracingHooks(overrides: HookOverrides = {}): Hooks {
  return {
    lifecycle: { stateForRestart: () => null, handleShutdown: () => {}, ...overrides.lifecycle },
    ingress: {
      handleConnection: () => IngressDecision.allow(),
      handleConnectionClose: () => {},
      ...overrides.ingress,
    },
    httpRequest: {
      handleProxyConnectRequest: () => ConnectDirective.allow(),
      handleProxyConnectResponse: () => undefined,
      handleRequest: () => RequestDecision.forward(),
      handleResponse: () => undefined,
      handleRequestEnd: () => {},
      ...overrides.httpRequest,
    },
    httpBody: {
      getRequestBodyFilter: () => undefined,
      getResponseBodyFilter: () => undefined,
      ...overrides.httpBody,
    },
    tunnel: {
      handleTunnelStart: () => TunnelDecision.passThrough(),
      getAppTunnelPipeline: () => undefined,
      ...overrides.tunnel,
    },
    proxyProtocol: { handleConnection: () => IngressDecision.allow(), ...overrides.proxyProtocol },
    datagram: { handleDatagram: () => undefined, ...overrides.datagram },
    ipTunnel: { handleTunnel: () => IngressDecision.allow(), ...overrides.ipTunnel },
    ipFlow: {
      handleFlow: () => IpFlowDecision.upgrade(),
      handlePacket: () => undefined,
      handleFlowEnd: () => {},
      ...overrides.ipFlow,
    },
    egress: {
      handleConnection: (target: SocketAddr) => EgressDecision.direct(target),
      handleConnectionEstablished: () => {},
      handleUpstreamIps: (ips: string[]) => ips,
      dnsResolveOverride: () => undefined,
      tcpConnectOverride: () => undefined,
      selectUpstream: () => undefined,
      udpConnectOverride: () => undefined,
      ...overrides.egress,
    },
  };
}
