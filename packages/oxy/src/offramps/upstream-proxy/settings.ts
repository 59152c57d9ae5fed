/**
 * Settings of `egress.upstream_proxy`: chain every egress connection through another HTTP
 * proxy. Off by default. An app can also pick a proxy per connection from its `EgressHook`,
 * which overrides these settings for that connection.
 */

import { type Infer, s } from 'foundations/settings';
import type { UpstreamProxy } from './connect.ts';

/** The schema of `egress.upstream_proxy`. */
export const UpstreamProxySettings = s.enabled(
  'Send egress through another HTTP proxy (CONNECT for tunnels, absolute-form for plain HTTP).',
  false,
  {
    addr: s.socketAddr(
      'Address of the upstream proxy: "host:port" or "[v6]:port". Cleartext HTTP only.',
      '127.0.0.1:3128',
    ),
    username: s.str('User name for Basic Proxy-Authorization; empty: send none.', ''),
    password: s.str('Password for Basic Proxy-Authorization.', ''),
  },
);

/** The value of `egress.upstream_proxy`. */
export type UpstreamProxySettings = Infer<typeof UpstreamProxySettings>;

/** The proxy these settings describe, or undefined when `enabled` is false. */
export function upstreamProxyFromSettings(settings: UpstreamProxySettings): UpstreamProxy | undefined {
  if (!settings.enabled) return undefined;
  const { host, port } = settings.addr;
  if (settings.username === '') return { host, port };
  return { host, port, auth: { username: settings.username, password: settings.password } };
}
