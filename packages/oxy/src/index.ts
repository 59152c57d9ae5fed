/**
 * Oxy's public API: the app model, the hooks and their decisions, the contexts hooks receive,
 * and the error catalogue. Everything else under `src/` is internal and may change.
 */
export { type AppDefinition, type AppHookTypes, bootstrap, defineApp, type OxyApp } from './app.ts';
export { type ComposeInfo, composeApps } from './compose.ts';
export { formatHostPort, type ListenAddr } from './context/addr.ts';
export type {
  ClientIdentity,
  ConnectionStats,
  EgressContext,
  EndpointContext,
  EndpointSettingsOf,
  ExtOf,
  ExtTypes,
  IngressContext,
  IngressProtocol,
  RequestContext,
  RequestKind,
  SocketAddr,
  WithEndpointSettings,
} from './context/contexts.ts';
export type { ExtFactories } from './context/ext.ts';
export {
  type ErrorSource,
  isOxyError,
  OXY_ERR,
  OxyError,
  type OxyErrorCode,
  type OxyErrorOptions,
} from './errors.ts';
export { type DatagramDirection, type DatagramHook, DatagramVerdict } from './hooks/datagram.ts';
export {
  type EgressBlock,
  EgressDecision,
  type EgressHook,
  type PacketsOptions,
  type ProxyHeaderOut,
  type UpstreamIpsAnswer,
  type UpstreamProxy,
  type UpstreamProxyAuth,
} from './hooks/egress.ts';
export {
  type BodyChunkResult,
  type BodyFilter,
  type BodyStop,
  type BodyTotals,
  BodyVerdict,
  type HttpBodyHook,
  type WholeBodyOptions,
  wholeBody,
} from './hooks/http-body.ts';
export {
  ConnectDirective,
  type DirectResponse,
  type HttpHeaders,
  type HttpRequestHook,
  RequestDecision,
  type RequestEndInfo,
  type RequestError,
  type RequestHead,
  type ResponseHead,
} from './hooks/http-request.ts';
export { IngressDecision, type IngressHook } from './hooks/ingress.ts';
export {
  type IpDirection,
  IpFlowDecision,
  type IpFlowEndInfo,
  type IpFlowHook,
  type IpFlowView,
  IpPacketVerdict,
  type IpTunnelHook,
} from './hooks/ip.ts';
export type { AppLifecycleHook } from './hooks/lifecycle.ts';
export type { ProxyProtocolHook } from './hooks/proxy-protocol.ts';
export type { HookCall, Hooks } from './hooks/run.ts';
export {
  CertificateChoice,
  ClientIdentityDecision,
  type TlsCertificate,
  type TlsHook,
} from './hooks/tls.ts';
export type { AppTunnelPipeline, TunnelHook, TunnelStart } from './hooks/tunnel.ts';
export { TunnelDecision } from './hooks/tunnel.ts';
export { CidrBlocklist, DEFAULT_BLOCKED_CIDRS } from './offramps/tcp/blocklist.ts';
export {
  type DatagramHeaderFormat,
  encodeDatagramReply,
  parseDatagramHeader,
  proxyReadOptions,
  type ReadProxyHeaderOptions,
  readProxyHeader,
} from './onramps/proxy-protocol/index.ts';
export {
  decodeProxyHeader,
  decodeSpp,
  type EncodeOptions as ProxyHeaderEncodeOptions,
  encodeProxyHeader,
  encodeSpp,
  PP2_CLIENT,
  type ProxyAddresses,
  type ProxyHeader,
  type ProxyHeaderInit,
  type ProxyHeaderView,
  ProxyProtocolError,
  type ProxyRawTlv,
  type ProxySslTlv,
  type ProxyTlv,
  proxyHeaderView,
} from './protocols/proxy-protocol/index.ts';
export { appSettings, type RunningProxy, type StartOptions, startOxy, startProxy } from './proxy.ts';
export {
  type RequestLogLine,
  type RequestLogOptions,
  requestLog,
  requestLogHooks,
  requestLogLine,
} from './request-log.ts';
export type { AppSettings, AppSettingsSchemas, OxySettings } from './settings.ts';
