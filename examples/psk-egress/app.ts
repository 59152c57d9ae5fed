/**
 * Pre-shared-key egress control, from "How Oxy uses hooks": clients may not reach private
 * addresses through the proxy unless their CONNECT carried `Proxy-Authorization: Preshared
 * oxy-is-a-proxy`. The request hook reads the header and records the result in the ingress
 * connection's ext state; the egress hooks read it back when deciding where to connect.
 *
 * The app enforces the private ranges itself, so run it with `egress.blocked_cidrs: []`
 * (see config.yaml); otherwise Oxy's own blocklist refuses private addresses for everyone.
 */
import { isIP } from 'node:net';
import { CidrBlocklist, ConnectDirective, DEFAULT_BLOCKED_CIDRS, defineApp, EgressDecision } from 'oxy';

const PSK_HEADER = 'Preshared oxy-is-a-proxy';
const privateCidrs = new CidrBlocklist(DEFAULT_BLOCKED_CIDRS);

export const app = defineApp({
  name: 'psk-egress',
  version: '0.1.0',
  description: 'Forward proxy that lets clients with a pre-shared key reach private addresses',
  ext: { ingress: () => ({ canAccessPrivateCidrs: false }) },
  start: () => ({
    httpRequest: {
      handleProxyConnectRequest(head, ctx) {
        if (head.headers['proxy-authorization'] === PSK_HEADER) ctx.ingress.ext.canAccessPrivateCidrs = true;
        return ConnectDirective.allow();
      },
    },
    egress: {
      // An IP literal is checked here, before anything is resolved…
      handleConnection(target, ctx) {
        if (
          isIP(target.host) !== 0 &&
          privateCidrs.has(target.host) &&
          !ctx.ingress.ext.canAccessPrivateCidrs
        ) {
          return EgressDecision.block('private address without the pre-shared key');
        }
        return EgressDecision.direct(target);
      },
      // …and a name by the addresses it resolves to.
      handleUpstreamIps(ips, ctx) {
        return ctx.ingress.ext.canAccessPrivateCidrs ? ips : ips.filter((ip) => !privateCidrs.has(ip));
      },
    },
  }),
});
