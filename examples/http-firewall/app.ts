/**
 * An HTTP firewall: requests to blocked hosts, or to blocked path prefixes, are answered 403;
 * CONNECT tunnels to blocked hosts are refused too (their paths are encrypted, so only the
 * host can be checked). The lists are the app's own settings, under `app:` in the config.
 */
import { s } from 'foundations/settings';
import { ConnectDirective, defineApp, RequestDecision } from 'oxy';

const FirewallSettings = s.object('The firewall rules.', {
  blocked_hosts: s.list('Host names (or IPs) no request or tunnel may reach.', s.str('A host name.', ''), [
    'blocked.example',
  ]),
  blocked_paths: s.list('Path prefixes no plain-HTTP request may ask for.', s.str('A path prefix.', '/'), [
    '/admin',
  ]),
});

function hostOf(authority: string): string {
  return authority
    .replace(/:\d+$/, '')
    .replace(/^\[|\]$/g, '')
    .toLowerCase();
}

/**
 * The firewall's rule for one request head: blocked host, then blocked path prefix, else
 * forward. Shared with the layer-3 firewall example, which applies it to HTTP inside IP flows.
 */
export function checkRequest(
  hosts: ReadonlySet<string>,
  paths: readonly string[],
  head: { readonly authority: string; readonly path: string },
): RequestDecision {
  if (hosts.has(hostOf(head.authority))) return RequestDecision.block(403, 'host blocked by firewall');
  if (paths.some((p) => head.path.startsWith(p)))
    return RequestDecision.block(403, 'path blocked by firewall');
  return RequestDecision.forward();
}

export const app = defineApp({
  name: 'http-firewall',
  version: '0.1.0',
  description: 'Forward proxy that blocks requests by host and path',
  settings: { app: FirewallSettings },
  start(settings) {
    const hosts = new Set(settings.app.blocked_hosts.map((h) => h.toLowerCase()));
    const paths = settings.app.blocked_paths;
    return {
      httpRequest: {
        handleRequest: (head) => checkRequest(hosts, paths, head),
        handleProxyConnectRequest(head) {
          return hosts.has(hostOf(head.authority))
            ? ConnectDirective.block(403, 'host blocked by firewall')
            : ConnectDirective.allow();
        },
      },
    };
  },
});
