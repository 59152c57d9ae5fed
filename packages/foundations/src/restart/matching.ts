/**
 * Which inherited socket an endpoint may take: the rules `Listeners` and `DatagramListeners`
 * claim by, in one place.
 *
 * A restart is also how a new config is applied, so a socket handed over by the previous
 * process is reused only when it is what the new settings ask for: the same transport, an
 * address that fits the endpoint's `addr`, and for UDP the same bind-time options. A socket
 * that fits no endpoint is closed once the service is ready (`Listeners.closeUnclaimed`), and
 * the endpoint binds what its settings say.
 *
 * Ordering: an endpoint first looks for a socket with its own name whose address fits
 * (`fitsByName`), then for any socket at exactly its address (`fitsByAddress`: one renamed
 * endpoint, or another endpoint's old address). The second step matters: the old process
 * holds its copy of every socket until it stops accepting, so binding the same address afresh
 * would fail with EADDRINUSE.
 *
 * A systemd socket named after the endpoint (`FileDescriptorName=`) is taken whatever its
 * address: the socket unit, not the settings, says where it listens. Only its transport is
 * checked, since systemd passes stream and datagram sockets in one list.
 */
import net from 'node:net';
import type { UdpSocketOptions } from 'native';
import type { ListenAddr } from '../settings/net.ts';

/** How a socket carries data: a stream listener (TCP, Unix stream), a SEQPACKET listener, UDP. */
export type SocketTransport = 'stream' | 'seqpacket' | 'datagram';

/**
 * The options of a UDP socket that are fixed once it is bound: a restart cannot change them on
 * the socket it hands over. (Buffer sizes and the reading options are not among them.)
 */
export interface DatagramBindOptions {
  readonly reuseAddr?: boolean;
  readonly reusePort?: boolean;
  readonly ipv6Only?: boolean;
}

/** True when two hosts are the same: IPv6 forms normalised, host names case-insensitive. */
export function sameHost(a: string, b: string): boolean {
  const norm = (h: string): string =>
    net.isIPv6(h)
      ? new net.SocketAddress({ address: h, family: 'ipv6' }).address
      : net.isIPv4(h)
        ? h
        : h.toLowerCase();
  return norm(a) === norm(b);
}

/**
 * True when a socket bound at `bound` (whose endpoint's settings said `configured`, when known)
 * can serve an endpoint of the same name whose settings say `want`. Only what `want` specifies
 * is compared: port 0 accepts any port (the kernel chose it, and a restart keeps it). A host
 * name (`localhost:8080`) is compared with the host the previous settings gave; when those are
 * unknown (a version that did not send them, a worker's socket), a host name cannot be checked
 * without resolving it and fits.
 */
export function fitsByName(want: ListenAddr, bound: ListenAddr, configured: ListenAddr | null): boolean {
  return fits(want, bound, configured, true);
}

/**
 * True when a socket bound at `bound` is at exactly the address `want` names, whatever
 * endpoint had it. Port 0 never matches: it asks for a new port, not a particular socket.
 */
export function fitsByAddress(want: ListenAddr, bound: ListenAddr, configured: ListenAddr | null): boolean {
  return fits(want, bound, configured, false);
}

function fits(want: ListenAddr, bound: ListenAddr, configured: ListenAddr | null, byName: boolean): boolean {
  if (want.kind === 'unix') return bound.kind === 'unix' && bound.path === want.path;
  if (bound.kind !== 'tcp') return false;
  if (want.port === 0 ? !byName : want.port !== bound.port) return false;
  if (sameHost(want.host, bound.host)) return true;
  if (configured !== null) return configured.kind === 'tcp' && sameHost(want.host, configured.host);
  return byName && net.isIP(want.host) === 0;
}

/** The options of `opts` that are fixed at bind time, as a restart hands them on. */
export function bindOptionsOf(opts: UdpSocketOptions): DatagramBindOptions {
  return {
    ...(opts.reuseAddr === undefined ? {} : { reuseAddr: opts.reuseAddr }),
    ...(opts.reusePort === undefined ? {} : { reusePort: opts.reusePort }),
    ...(opts.ipv6Only === undefined ? {} : { ipv6Only: opts.ipv6Only }),
  };
}

/**
 * True when a socket bound with `had` (null: unknown, as for systemd's) gives what `want` asks.
 * The reuse flags default to false on both sides; `ipv6Only` counts only on an IPv6 socket and
 * only when `want` sets it (unset, the system's default is accepted).
 */
export function bindOptionsFit(
  want: UdpSocketOptions,
  had: DatagramBindOptions | null,
  host: string,
): boolean {
  if (had === null) return true;
  if ((want.reuseAddr ?? false) !== (had.reuseAddr ?? false)) return false;
  if ((want.reusePort ?? false) !== (had.reusePort ?? false)) return false;
  return !net.isIPv6(host) || want.ipv6Only === undefined || want.ipv6Only === had.ipv6Only;
}
