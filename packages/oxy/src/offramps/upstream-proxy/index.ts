/** Egress through another HTTP proxy: CONNECT tunnels, absolute-form requests, settings. */
export { absoluteFormRequestOptions, undiciProxyAgentOptions } from './absolute-form.ts';
export {
  type ConnectViaProxyOptions,
  connectViaProxy,
  type ProxyTunnel,
  parseResponseHead,
  proxyAuthorization,
  type UpstreamProxy,
  type UpstreamProxyAuth,
} from './connect.ts';
export { UpstreamProxySettings, upstreamProxyFromSettings } from './settings.ts';
