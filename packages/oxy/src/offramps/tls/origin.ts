/**
 * HTTPS origins for the HTTP forwarding path: the one connector both `https://` absolute-form
 * requests and the requests inside an intercepted tunnel use. It is the egress pipeline's TCP
 * connection (DNS, `handleUpstreamIps`, `blocked_cidrs`, Happy Eyeballs or the override,
 * `handleConnectionEstablished`) followed by verified TLS (`connectTls`: SNI, ALPN
 * `http/1.1`, the system store plus `egress.tls.extra_ca`, sessions cached per trust).
 *
 * Why ALPN offers `http/1.1` only here: a caller of this connector hands the socket to an
 * HTTP/1.1 client. The forwarding pipeline's own https connections offer `h2, http/1.1` and run
 * HTTP/2 when the origin chooses it (`offramps/http2/session-pool.ts`). An origin that cannot
 * speak what was offered fails its request with a 502, never a downgrade to cleartext.
 *
 * Ordering rule: TCP connect → `handleConnectionEstablished` → TLS handshake → the socket is
 * handed to the HTTP client. A verification failure rejects with `OXY_ERR_UPSTREAM_TLS`
 * (answered 502 with the reason by the forwarding pipeline).
 */
import type tls from 'node:tls';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EgressState } from '../../context/state.ts';
import { connectDirect, established } from '../../egress/connect.ts';
import type { Runtime } from '../../runtime.ts';
import { connectTls } from './connect.ts';

/** A verified TLS connection to an origin and the address it went to. */
export interface HttpsOrigin {
  readonly socket: tls.TLSSocket;
  readonly remote: SocketAddr;
}

/**
 * Connects to `addr` through the egress pipeline of `eg`, then runs verified TLS for
 * `serverName` (SNI unless an IP literal; the certificate must cover it). `trusted` is true for
 * an address the proxy chose itself (no IP hook, no blocklist), as in `connectDirect`.
 */
export async function connectHttpsOrigin(
  rt: Runtime,
  eg: EgressState,
  addr: SocketAddr,
  serverName: string,
  trusted = false,
): Promise<HttpsOrigin> {
  const { socket, remote } = await connectDirect(rt, eg, addr, trusted);
  established(rt, eg, socket, remote);
  const secure = await connectTls({
    host: serverName,
    port: addr.port,
    socket,
    trust: rt.upstreamTrust,
    alpn: ['http/1.1'],
    timeoutMs: rt.settings.egress.connect_timeout,
  });
  return { socket: secure.socket, remote };
}
