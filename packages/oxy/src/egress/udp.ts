/**
 * The UDP connector of the egress pipeline: a datagram session's own upstream socket, connected
 * to the first address of its route that the kernel accepts (so the kernel drops datagrams
 * from anyone else, and an ICMP error for it reaches this socket), from `egress.source_addr`
 * when it is of the same family. The route (decision, DNS, `handleUpstreamIps`,
 * `blocked_cidrs`) was made before, by `routeEgress(…, 'udp')`, exactly as for a stream.
 *
 * There is no Happy Eyeballs for UDP: nothing answers a connect, so the addresses are taken in
 * the resolver's order, and the session moves to the next one only when the one it uses is
 * reported unreachable ({@link UNREACHABLE}) before any reply came from it (the session's rule,
 * `flows/datagram/session.ts`). {@link connectUdp} returns the addresses left for that.
 */
import type dgram from 'node:dgram';
import { UdpSocket } from 'native';
import type { SocketAddr } from '../context/contexts.ts';
import type { EgressState } from '../context/state.ts';
import { OXY_ERR, OxyError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { datagramMetrics } from '../telemetry/metrics.ts';
import { sourceFor } from './connect.ts';
import type { DatagramPackets } from './packets.ts';

/**
 * SO_RCVBUF of a session's upstream socket. The kernel's default (`net.core.rmem_default`, often
 * 208 KiB) holds a few hundred small datagrams: an upstream answering a burst faster than the
 * event loop turns (a busy or loaded machine) overflowed it, and replies were lost that a
 * client talking to the upstream directly gets. Memory is charged only for datagrams waiting;
 * the kernel caps the value at `net.core.rmem_max`. The endpoint's own socket has 4 MiB.
 */
export const UPSTREAM_RECEIVE_BUFFER = 4 << 20;

/**
 * The errors of a connected upstream socket that say its address does not serve (ICMP port,
 * host or network unreachable): a session that has had no reply moves to its next address.
 */
export const UNREACHABLE: ReadonlySet<string> = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH']);

/** Most addresses of one route a session tries, the first included. */
export const MAX_UDP_ADDRESSES = 8;

/** A connected upstream UDP socket, the address it is connected to, and the addresses after it. */
export interface UdpUpstream {
  readonly socket: UdpSocket;
  readonly remote: SocketAddr;
  /** The route's addresses not tried yet, in order (at most {@link MAX_UDP_ADDRESSES} in all). */
  readonly rest: readonly string[];
}

/**
 * Opens a UDP socket connected to the first of `ips` (at `port`) that the kernel accepts (a
 * family without a route fails at connect). Throws `OXY_ERR_CONNECT_FAILED`, with the first
 * address's error, when none is accepted.
 */
export function connectUdp(
  rt: Runtime,
  ips: readonly string[],
  port: number,
  maxDatagram: number,
): UdpUpstream {
  const tried = ips.slice(0, MAX_UDP_ADDRESSES);
  if (tried.length === 0)
    throw new OxyError(OXY_ERR.CONNECT_FAILED, 'no address to send to', { source: 'internal' });
  let first: OxyError | null = null;
  for (let i = 0; i < tried.length; i++) {
    const ip = tried[i] as string;
    try {
      const socket = UdpSocket.connect({
        address: ip,
        port,
        maxDatagramSize: maxDatagram,
        receiveBufferSize: UPSTREAM_RECEIVE_BUFFER,
        localAddress: sourceFor(rt, ip),
      });
      return { socket, remote: { host: ip, port }, rest: tried.slice(i + 1) };
    } catch (e) {
      first ??= new OxyError(
        OXY_ERR.CONNECT_FAILED,
        `cannot open a UDP socket to ${ip}:${port}: ${(e as Error).message}`,
        { source: 'upstream', cause: e },
      );
    }
  }
  throw first as OxyError;
}

/** A session's upstream made by `EgressHook.udpConnectOverride`: how to send, and where to. */
export interface AppUdpUpstream {
  readonly channel: DatagramPackets;
  readonly remote: SocketAddr;
}

/**
 * Asks `EgressHook.udpConnectOverride` for the socket of a session going to `ips` at `port`:
 * null when there is no such hook or it answers `undefined` (the built-in socket then; callers
 * skip the call without the hook, so a session opens without a turn of the event loop). The
 * socket's `message` events go to `onReply`; an error on it is counted as the built-in
 * socket's are (`udp_upstream_errors_total{code}`), and the session goes on. Throws the hook's
 * failure (`OXY_ERR_HOOK_FAILED`).
 */
export async function appUdpUpstream(
  rt: Runtime,
  eg: EgressState,
  ips: readonly string[],
  port: number,
  onReply: (data: Buffer) => void,
): Promise<AppUdpUpstream | null> {
  const override = rt.hooks.udpConnectOverride;
  if (override === null) return null;
  const addrs = ips.map((host) => ({ host, port }));
  let socket: dgram.Socket | undefined;
  try {
    socket = await override(addrs, eg);
  } catch (e) {
    throw rt.hookFailed('EgressHook.udpConnectOverride', e);
  }
  if (socket === undefined) return null;
  const s = socket;
  let peer: SocketAddr | null = null;
  try {
    const a = s.remoteAddress();
    peer = { host: a.address, port: a.port };
  } catch {} // not connected: datagrams go to the first address
  const to = peer ?? addrs[0] ?? null;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      s.close();
    } catch {} // the app closed it already
  };
  if (to === null) {
    close();
    throw new OxyError(OXY_ERR.CONNECT_FAILED, 'no address to send to', { source: 'internal' });
  }
  const failed = (e: NodeJS.ErrnoException) =>
    datagramMetrics
      .upstream_errors_total({ endpoint: eg.ingress.endpoint.name, code: e.code ?? 'error' })
      .inc();
  s.on('message', (msg) => {
    if (!closed) onReply(msg);
  });
  s.on('error', failed);
  const channel: DatagramPackets = {
    // A socket the app closed throws on send: counted, never thrown into the receive loop.
    send: (data) => {
      try {
        if (peer === null) s.send(data, to.port, to.host);
        else s.send(data);
      } catch (e) {
        failed(e as NodeJS.ErrnoException);
      }
    },
    close,
  };
  return { channel, remote: to };
}
