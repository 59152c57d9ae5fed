/**
 * RFC 9209 `Proxy-Status: …; next-hop=…` on CONNECT responses, from "How Oxy uses hooks":
 * the egress hook saves the address actually connected to in the ingress connection's ext
 * state, and the CONNECT response hook puts it in a header, so the client learns which
 * address its tunnel reached.
 */
import { defineApp, formatHostPort, type SocketAddr } from 'oxy';

export const app = defineApp({
  name: 'proxy-status',
  version: '0.1.0',
  description: 'Forward proxy that reports the next hop of each CONNECT (RFC 9209)',
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
    },
  }),
});
