/**
 * Where a forwarded HTTP request goes once its egress decision allowed it: the pool key, the
 * address, the name an https connection is verified for, and the request-target to send.
 * Split from the exchange run (`exchange.ts`) because it is a pure function of the decision.
 */
import { formatHostPort } from '../../context/addr.ts';
import type { SocketAddr } from '../../context/contexts.ts';
import type { EgressState } from '../../context/state.ts';
import { connectFailed } from '../../egress/connect.ts';
import { noPacketPath } from '../../egress/packets.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { EgressDecision } from '../../hooks/egress.ts';
import type { UpstreamTarget } from '../../offramps/http/pool.ts';
import { proxyAuthorization } from '../../offramps/upstream-proxy/connect.ts';
import type { Runtime } from '../../runtime.ts';

/** Where a forwarded request goes once its egress decision allowed it. */
export interface ForwardRoute {
  /** The pool key and the address to connect to: the target, or the upstream proxy. */
  readonly target: UpstreamTarget;
  /** The request-target to send: origin-form to the target, absolute-form to a proxy. */
  readonly requestTarget: string;
  /** `Proxy-Authorization` for the upstream proxy, if it has credentials. */
  readonly proxyAuthorization: string | undefined;
}

/**
 * The route of a request to `addr` (`scheme`, `authority` and `path` as the request names them)
 * under an allowing `decision`. Pool keys: the scheme and the address decided on (the target, or
 * the upstream proxy and its credentials), plus the client connection's id unless the pool may
 * be shared: with egress hooks installed, two clients' requests to one origin must not share a
 * connection a hook allowed for one of them only. Throws for `https` through an upstream proxy
 * (that would need a CONNECT tunnel, not yet made here; never sent in the clear), and for
 * `packets` (`OXY_ERR_EGRESS_NO_PACKET_PATH`: a forwarded request is not a flow of an IP tunnel).
 */
export function routeFor(
  rt: Runtime,
  eg: EgressState,
  decision: Exclude<EgressDecision, { kind: 'block' }>,
  addr: SocketAddr,
  scheme: string,
  authority: string,
  path: string,
  serverName?: string,
): ForwardRoute {
  const shared = rt.fast.sharedPool ? '' : `|${eg.ingress.id}`;
  const https = scheme === 'https';
  if (decision.kind === 'direct') {
    const to = decision.addr.host === addr.host && decision.addr.port === addr.port ? addr : decision.addr;
    const tls = https ? (serverName ?? addr.host) : null;
    return {
      target: {
        // An https connection is verified for one name: the name is part of the key.
        key: `${tls === null ? '' : `https|${tls}|`}${formatHostPort(to.host, to.port)}${shared}`,
        egress: eg,
        addr: to,
        trusted: false,
        tls,
      },
      requestTarget: path,
      proxyAuthorization: undefined,
    };
  }
  if (decision.kind === 'packets') {
    connectFailed(OXY_ERR.EGRESS_NO_PACKET_PATH);
    throw noPacketPath(
      'EgressDecision.packets cannot be carried out: a forwarded request is not a flow of an IP tunnel',
    );
  }
  if (https)
    throw new OxyError(OXY_ERR.UPSTREAM_FAILED, 'https:// through an upstream proxy is not supported', {
      source: 'upstream',
      status: 502,
    });
  const proxy = decision.proxy;
  const token = proxyAuthorization(proxy.auth);
  return {
    target: {
      key: `proxy|${formatHostPort(proxy.host, proxy.port)}|${token ?? ''}${shared}`,
      egress: eg,
      addr: { host: proxy.host, port: proxy.port },
      trusted: true,
      tls: null,
    },
    requestTarget: `http://${authority}${path}`,
    proxyAuthorization: token,
  };
}
