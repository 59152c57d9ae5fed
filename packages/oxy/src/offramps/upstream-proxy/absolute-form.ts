/**
 * Plain (non-tunnelled) HTTP requests through the upstream proxy, in absolute form
 * (`GET http://example.com/path HTTP/1.1`, RFC 9112 §3.2.2), with `Proxy-Authorization`.
 *
 * How the core uses it, whichever HTTP client its off-ramp runs on:
 * - undici: `new ProxyAgent(undiciProxyAgentOptions(proxy))` as the dispatcher. With
 *   `proxyTunnel: false`, undici sends `http:` URLs in absolute form to the proxy and still
 *   tunnels `https:` URLs through CONNECT (TLS end to end).
 * - node:http: `http.request(absoluteFormRequestOptions(proxy, url, { method, headers }))`.
 * Either way the request goes to the proxy's address and the target's name is resolved by the
 * proxy. These helpers are for code outside the core: the core's own off-ramp reaches the proxy
 * through the egress pipeline (trusted: no `egress.blocked_cidrs`, no `handleUpstreamIps`; its
 * name resolved by `egress.dns` and `dnsResolveOverride`), and node:http or undici here resolve
 * it themselves.
 */

import type { RequestOptions } from 'node:http';
import type { ProxyAgent } from 'undici';
import { formatHostPort } from '../tcp/happy-eyeballs.ts';
import { proxyAuthorization, type UpstreamProxy } from './connect.ts';

/** Options for undici's `ProxyAgent` that send `http:` requests to `proxy` in absolute form. */
export function undiciProxyAgentOptions(proxy: UpstreamProxy): ProxyAgent.Options {
  const token = proxyAuthorization(proxy.auth);
  return {
    uri: `http://${formatHostPort(proxy.host, proxy.port)}`,
    proxyTunnel: false,
    ...(token === undefined ? {} : { token }),
  };
}

/**
 * Options for `http.request` that send a request for `url` (an `http:` URL) to `proxy` in
 * absolute form. `Host` is the target's authority; `Proxy-Authorization` replaces any the
 * caller passed (a client's own credentials for this proxy must never leak upstream).
 */
export function absoluteFormRequestOptions(
  proxy: UpstreamProxy,
  url: URL | string,
  init: { method?: string; headers?: Record<string, string | string[]> } = {},
): RequestOptions {
  const target = typeof url === 'string' ? new URL(url) : url;
  if (target.protocol !== 'http:') {
    throw new RangeError(
      `absolute-form through a proxy is for http: URLs, got ${target.protocol} (use CONNECT)`,
    );
  }
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    if (name.toLowerCase() !== 'proxy-authorization' && name.toLowerCase() !== 'host') headers[name] = value;
  }
  headers.host = target.host;
  const token = proxyAuthorization(proxy.auth);
  if (token !== undefined) headers['proxy-authorization'] = token;
  return {
    host: proxy.host,
    port: proxy.port,
    method: init.method ?? 'GET',
    path: target.href,
    headers,
    setHost: false,
  };
}
