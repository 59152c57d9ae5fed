/**
 * `oxy/testing`: the integration testing framework for apps built on Oxy.
 *
 * - Start the app under test: `startApp` (in-process) or `startAppProcess` (child process),
 *   with settings overrides, ephemeral ports and a leak-checking `stop()`.
 * - Peers on loopback: HTTP(S) upstreams, TCP echo, hold-open server, DNS server.
 * - Clients: absolute-form requests, CONNECT over HTTP/1.1 and HTTP/2, raw bytes.
 * - Telemetry capture (`captureTelemetry`), audit records, and the hook recorder with
 *   transcript assertions (`recorder.expectHooks(conn, [...])`).
 *
 * See docs/testing.md for a complete app test.
 */
export { type CapturedSpan, captureTelemetry, type TelemetryCapture } from 'foundations/telemetry/testing';
export {
  type AppProcess,
  type AppUnderTest,
  hooksApp,
  mergeSettings,
  type SettingsOverrides,
  type StartAppOptions,
  type StartAppProcessOptions,
  startApp,
  startAppProcess,
} from './app.ts';
export {
  type CertificateAuthority,
  type CertificateOptions,
  type GeneratedCertificate,
  generateCertificate,
  generateCertificateAuthority,
} from './certs.ts';
export {
  type ClientResponse,
  type CurlResult,
  connectTunnel,
  connectTunnelH2,
  curl,
  type H2Tunnel,
  type ProxyAddress,
  type ProxyRequestOptions,
  proxyRequest,
  type RawExchange,
  rawConnect,
  rawExchange,
  readBytes,
  readUntil,
  type Tunnel,
  waitForClose,
} from './clients.ts';
export * from './dns-server.ts';
export { randomFloat, randomUint32 } from './fuzz.ts';
export {
  HOOK_ORDERS,
  type HookName,
  hookOrder,
  TRAFFIC_FLOWS,
  type TrafficKind,
  tracingHooks,
} from './hook-orders.ts';
export {
  type HttpUpstream,
  type HttpUpstreamOptions,
  type Peer,
  type Route,
  type RouteResponse,
  type SeenRequest,
  startHoldOpenServer,
  startHttpUpstream,
  startTcpEcho,
  startTcpServer,
  startTlsUpstream,
  type TcpPeer,
  type TlsUpstream,
  unusedPort,
} from './peers.ts';
export { diffLists, HookRecorder, type RecordedCall, summarize } from './recorder.ts';
export { waitUntil } from './wait.ts';
