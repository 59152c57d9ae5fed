/**
 * CONNECT-IP (RFC 9484) on an `http` endpoint: one tunnel per request, over HTTP/2 extended
 * CONNECT (`:protocol connect-ip`) or HTTP/1.1 `Upgrade: connect-ip`, its IP packets carried in
 * DATAGRAM capsules (context 0) and handed to the IP flow pipeline (`flows/ip/pipeline.ts`)
 * through an {@link IpTunnelPort}.
 *
 * Order: request checks (`checkMasqueRequest`, done by the caller: template, scope) →
 * `HttpRequestHook.handleProxyConnectRequest` (a block is answered with its status) → for a
 * DNS-name target, its resolution into the scope (`ip-scope.ts`: the egress pipeline's
 * resolution, `handleUpstreamIps` and `blocked_cidrs`; failures answered through
 * `refusalForError`: 502 `dns_error`, 403 `destination_ip_prohibited`, …) → one address of
 * each family from the endpoint's pool (`ip-pool.ts`; none free: 503
 * `connection_limit_reached`) → 200 (HTTP/2) or 101 (HTTP/1.1) with `Capsule-Protocol: ?1` →
 * ADDRESS_ASSIGN (the leased /32 and /128) and ROUTE_ADVERTISEMENT (the scope: the prefix,
 * every address for `*`, or each resolved address alone, with `ipproto`) → capsules both ways:
 * ADDRESS_REQUEST answered with a full ADDRESS_ASSIGN, DATAGRAM packets checked (source = the
 * assigned address, destination and protocol inside the scope or the gateway; violations
 * dropped and counted) then given to the pipeline → end (stream closed, idle
 * `tunnel_idle_timeout`, malformed capsule: RST_STREAM PROTOCOL_ERROR or the socket closed) →
 * pipeline closed, address released, one audit record
 * (`tunnel`, kind `connect-ip`, bytes and packets each way).
 */

import { MAX_TIMER_MS } from 'foundations/settings';
import { log } from 'foundations/telemetry';
import type { SocketAddr } from '../../context/contexts.ts';
import type { IngressConnection } from '../../context/state.ts';
import { RequestState } from '../../context/state.ts';
import { isOxyError } from '../../errors.ts';
import { openIpPipeline } from '../../flows/ip/pipeline.ts';
import type { IpTunnelPort } from '../../flows/ip/port.ts';
import { countFailure, recordEnd } from '../../flows/record.ts';
import type { ConnectDirective, RequestHead } from '../../hooks/http-request.ts';
import { acceptMasqueTunnel } from '../../masque/server.ts';
import type { IpTunnel } from '../../masque/tunnel.ts';
import type { IpPrefixEntry } from '../../protocols/capsule/connect-ip.ts';
import { addressBytes } from '../../protocols/ip/address.ts';
import { IP_PROTO, parseIp } from '../../protocols/ip/packet.ts';
import {
  type ConnectIpRequest,
  type MasqueRefusal,
  masqueRefusal,
  refusalForError,
} from '../../protocols/masque/request.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import type { MasqueExchange } from './exchange.ts';
import { connectIpMetrics } from './ip-metrics.ts';
import type { IpLease, IpPool } from './ip-pool.ts';
import { type IpScope, inScope, literalScope, resolveScope, scopeRoutes } from './ip-scope.ts';

/** Bytes of capsules queued to a slow client beyond which packets to it are dropped, as a router would. */
export const MAX_QUEUED_TO_CLIENT = 1024 * 1024;

let nextPortId = 1;

/** What one CONNECT-IP request needs besides its exchange. */
export interface ConnectIpServe {
  readonly rt: Runtime;
  readonly pool: IpPool;
  readonly proxyName: string;
  readonly idleMs: number;
}

/** Starts serving a checked CONNECT-IP request; settles by itself (never throws to the caller). */
export function serveConnectIp(
  cfg: ConnectIpServe,
  ex: MasqueExchange,
  req: ConnectIpRequest,
  hookHead: RequestHead,
  conn: IngressConnection,
): void {
  conn.requests++;
  conn.tunnels++;
  const t = req.target;
  const host = t.kind === 'any' ? '*' : t.kind === 'dns' ? t.host : `${t.address}/${t.prefixLength}`;
  const target: SocketAddr = { host, port: 0 };
  const request = new RequestState(conn, 'connect-ip', hookHead.method, target, cfg.rt.ext);
  void forkRequest(request, () => runIpTunnel(cfg, request, ex, req, hookHead))
    .catch((e: unknown) => {
      log.error('CONNECT-IP tunnel failed', { err: e });
      ex.stream.destroy();
    })
    .finally(() => {
      conn.tunnels--;
    });
}

/** The port the pipeline answers through: DATAGRAM capsules on the tunnel, bounded. */
class CapsulePort implements IpTunnelPort {
  readonly id = nextPortId++;
  readonly ingress: IngressConnection;
  readonly #tunnel: IpTunnel;
  readonly #stream: { readonly writableLength: number };
  readonly #queueFull = connectIpMetrics.packets_dropped_total({ reason: 'client_backpressure' });
  packetsDown = 0;
  bytesDown = 0;
  lastActive = performance.now();

  constructor(ingress: IngressConnection, tunnel: IpTunnel, stream: { readonly writableLength: number }) {
    this.ingress = ingress;
    this.#tunnel = tunnel;
    this.#stream = stream;
  }

  get closed(): boolean {
    return this.#tunnel.closed;
  }

  send(packet: Buffer): void {
    if (this.#tunnel.closed) return;
    if (this.#stream.writableLength > MAX_QUEUED_TO_CLIENT) {
      this.#queueFull.inc();
      return;
    }
    this.#tunnel.send(packet, 0);
    this.packetsDown++;
    this.bytesDown += packet.length;
    this.lastActive = performance.now();
  }
}

async function askConnectHook(
  cfg: ConnectIpServe,
  request: RequestState,
  hookHead: RequestHead,
): Promise<MasqueRefusal | null> {
  const hook = cfg.rt.hooks.proxyConnectRequest;
  if (hook === null) return null;
  let d: ConnectDirective;
  try {
    d = await hook(hookHead, request);
  } catch (e) {
    return refusalForError(cfg.rt.hookFailed('HttpRequestHook.handleProxyConnectRequest', e), cfg.proxyName);
  }
  request.decisions.push(`connect:${d?.kind ?? 'allow'}`);
  if (d !== undefined && d.kind === 'block')
    return masqueRefusal(d.status, 'http_request_denied', d.reason, cfg.proxyName);
  return null;
}

async function runIpTunnel(
  cfg: ConnectIpServe,
  request: RequestState,
  ex: MasqueExchange,
  req: ConnectIpRequest,
  hookHead: RequestHead,
): Promise<void> {
  const { rt } = cfg;
  const endpoint = request.ingress.endpoint.name;
  const none = { datagrams_up: 0, datagrams_down: 0 };
  const refuse = (r: MasqueRefusal, reason: string): void => {
    request.status = r.status;
    countFailure(request, r.status);
    ex.refuse(r);
    recordEnd(rt, request, 0, 0, reason, none);
  };
  const blocked = await askConnectHook(cfg, request, hookHead);
  if (blocked !== null) {
    refuse(blocked, blocked.status >= 500 ? 'OXY_ERR_HOOK_FAILED' : 'blocked');
    return;
  }
  let scope: IpScope;
  if (req.target.kind === 'dns') {
    const name = req.target.host;
    try {
      scope = await resolveScope(rt, request, name, req.ipproto, cfg.pool.gateways);
    } catch (e) {
      const r = refusalForError(e, cfg.proxyName, name);
      refuse(r, isOxyError(e) ? e.code : 'unknown');
      return;
    }
  } else scope = literalScope(req);
  if (ex.closed) {
    request.status = 499;
    recordEnd(rt, request, 0, 0, 'client_closed', none);
    return;
  }
  const lease = cfg.pool.lease();
  if (lease === null) {
    connectIpMetrics.pool_exhausted_total({ endpoint }).inc();
    refuse(
      masqueRefusal(
        503,
        'connection_limit_reached',
        'the CONNECT-IP address pool is exhausted',
        cfg.proxyName,
      ),
      'pool_exhausted',
    );
    return;
  }
  const leased = connectIpMetrics.pool_leased({ endpoint });
  leased.inc();
  request.status = ex.httpVersion === '2' ? 200 : 101;
  ex.accept('connect-ip');
  const tunnel = acceptMasqueTunnel({
    protocol: 'connect-ip',
    stream: ex.stream,
    httpVersion: ex.httpVersion,
    head: ex.early,
  });
  const active = connectIpMetrics.tunnels_active({ endpoint });
  active.inc();
  connectIpMetrics.tunnels_total({ endpoint }).inc();
  const port = new CapsulePort(request.ingress, tunnel, ex.stream);
  const pipeline = openIpPipeline(rt, port);
  const check = packetCheck(scope, lease, cfg.pool.gateways);

  const assigned = (ids: { 4: number; 6: number }, refused: IpPrefixEntry[] = []): IpPrefixEntry[] => [
    ...(lease.v4 === null
      ? []
      : [{ requestId: ids[4], version: 4 as const, address: lease.v4, prefixLength: 32 }]),
    ...(lease.v6 === null
      ? []
      : [{ requestId: ids[6], version: 6 as const, address: lease.v6, prefixLength: 128 }]),
    ...refused,
  ];
  const answered = { 4: 0, 6: 0 };
  tunnel.assignAddresses(assigned(answered));
  tunnel.advertiseRoutes(scopeRoutes(scope, lease));

  tunnel.on('addressRequest', (entries) => {
    const refused: IpPrefixEntry[] = [];
    for (const e of entries) {
      if ((e.version === 4 ? lease.v4 : lease.v6) !== null) answered[e.version] = e.requestId;
      // RFC 9484 §4.7.2: an all-zero address with the full prefix length refuses the request.
      else
        refused.push({
          requestId: e.requestId,
          version: e.version,
          address: e.version === 4 ? '0.0.0.0' : '::',
          prefixLength: e.version === 4 ? 32 : 128,
        });
    }
    tunnel.assignAddresses(assigned(answered, refused));
  });

  let packetsUp = 0;
  let bytesUp = 0;
  tunnel.on('datagram', (payload, contextId) => {
    port.lastActive = performance.now();
    if (contextId !== 0) {
      connectIpMetrics.packets_dropped_total({ reason: 'context_id' }).inc();
      return;
    }
    const packet = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
    const why = check(packet);
    if (why !== null) {
      connectIpMetrics.packets_dropped_total({ reason: why }).inc();
      return;
    }
    packetsUp++;
    bytesUp += packet.length;
    pipeline.fromClient(packet);
  });
  tunnel.on('error', (e) => log.debug('CONNECT-IP capsule error', { code: e.code, err: e.message }));

  let idle: NodeJS.Timeout | undefined;
  let idleClosed = false;
  if (cfg.idleMs > 0) {
    const tick = (): void => {
      const quiet = performance.now() - port.lastActive;
      if (quiet >= cfg.idleMs) {
        idleClosed = true;
        void tunnel.close();
      } else idle = setTimeout(tick, Math.min(MAX_TIMER_MS, cfg.idleMs - quiet + 1)).unref();
    };
    idle = setTimeout(tick, cfg.idleMs).unref();
  }
  await tunnel.whenClosed;
  clearTimeout(idle);
  const reason = tunnel.error?.code ?? (idleClosed ? 'idle_timeout' : 'client_closed');
  pipeline.close(reason);
  lease.release();
  leased.dec();
  active.dec();
  connectIpMetrics.packets_total({ direction: 'up' }).inc(packetsUp);
  connectIpMetrics.packets_total({ direction: 'down' }).inc(port.packetsDown);
  recordEnd(rt, request, bytesUp, port.bytesDown, reason, {
    datagrams_up: packetsUp,
    datagrams_down: port.packetsDown,
  });
}

/**
 * The check of each packet from the client: null when it may go to the pipeline, else the
 * drop reason (`malformed`, `source`, `scope`).
 */
export function packetCheck(
  scope: IpScope,
  lease: Pick<IpLease, 'v4' | 'v6'>,
  gateways: { readonly v4: string | null; readonly v6: string | null },
): (packet: Buffer) => string | null {
  const src4 = lease.v4 === null ? null : addressBytes(lease.v4);
  const src6 = lease.v6 === null ? null : addressBytes(lease.v6);
  const gw4 = gateways.v4 === null ? null : addressBytes(gateways.v4);
  const gw6 = gateways.v6 === null ? null : addressBytes(gateways.v6);
  return (packet) => {
    let p: ReturnType<typeof parseIp>;
    try {
      p = parseIp(packet);
    } catch {
      // Boundary: a packet that does not parse is dropped and counted, the tunnel goes on.
      return 'malformed';
    }
    const src = p.version === 4 ? src4 : src6;
    if (src === null || src.compare(p.buf, p.srcOffset, p.srcOffset + p.addrLength) !== 0) return 'source';
    // The gateway answers pings whatever the scope (the client's only way to test the tunnel).
    const gw = p.version === 4 ? gw4 : gw6;
    const icmp = p.protocol === (p.version === 4 ? IP_PROTO.ICMP : IP_PROTO.ICMPV6);
    if (icmp && gw !== null && gw.compare(p.buf, p.dstOffset, p.dstOffset + p.addrLength) === 0) return null;
    if (!inScope(scope, p.buf, p.dstOffset, p.addrLength)) return 'scope';
    if (scope.ipproto !== '*' && p.protocol !== scope.ipproto) return 'scope';
    return null;
  };
}
