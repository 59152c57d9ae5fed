/**
 * RFC 9209 `Proxy-Status: …; next-hop=…` on CONNECT responses, from "How Oxy uses hooks":
 * the egress hook saves the address actually connected to in the ingress connection's ext
 * state, and the CONNECT response hook puts it in a header, so the client learns which
 * address its tunnel reached.
 *
 * Forwarded (absolute-form) responses get the header too, from `ctx.upstream`: a request sent
 * on a pooled keep-alive connection makes no new connection, so no egress hook fires for it,
 * but the request context still names the connection it went out on.
 */
import { defineApp, formatHostPort, type SocketAddr } from 'oxy';

export const app = defineApp({
  name: 'proxy-status',
  version: '0.1.0',
  description: 'Forward proxy that reports the next hop of each CONNECT and response (RFC 9209)',
  ext: { ingress: () => ({ upstreamAddr: null as SocketAddr | null }) },
  start: () => ({
    egress: {
      handleConnectionEstablished(upstream, ctx) {
        ctx.ingress.ext.upstreamAddr = upstream;
      },
    },
    httpRequest: {
      handleProxyConnectResponse(res, ctx) {
        const addr = ctx.ingress.ext.upstreamAddr;
        if (addr !== null)
          res.headers['proxy-status'] = `oxy; next-hop="${formatHostPort(addr.host, addr.port)}"`;
        return res;
      },
      handleResponse(res, ctx) {
        if (ctx.upstream !== null) res.headers['proxy-status'] = `oxy; next-hop="${ctx.upstream}"`;
        return res;
      },
    },
  }),
});
