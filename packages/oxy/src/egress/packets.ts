/**
 * The egress connector of `EgressDecision.packets`: a unit whose on-ramp can send it out as IP
 * packets (an IP tunnel's upgraded TCP flow or UDP flow, when the tunnel has `ip.offramp`)
 * registers a {@link PacketPath} for its request; the egress pipeline then connects through it
 * instead of through this host's network. Any other unit has no path, and the decision is
 * refused with `OXY_ERR_EGRESS_NO_PACKET_PATH` (502), counted as a failed connect.
 *
 * Ordering rule: the path is registered before the unit's egress route runs (the upgrade
 * service and the UDP flow register it when they make the request), and is forgotten with the
 * request (a WeakMap, so nothing here outlives it).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../context/contexts.ts';
import type { RequestState } from '../context/state.ts';
import { OXY_ERR, OxyError } from '../errors.ts';

/** A UDP flow's way out as packets: datagrams in, replies out. */
export interface DatagramPackets {
  /** Sends one datagram as a UDP packet (copied or written before this returns). */
  send(data: Uint8Array): void;
  /** Stops: replies are no longer delivered. Idempotent. */
  close(): void;
}

/** How a unit leaves as IP packets (made by its IP tunnel). */
export interface PacketPath {
  /**
   * TCP: a connected stream to `addr` whose packets leave through the off-ramp. Rejects with
   * `OXY_ERR_CONNECT_FAILED` or `OXY_ERR_CONNECT_TIMEOUT`. Absent for a UDP flow.
   */
  connectStream?(addr: SocketAddr, timeoutMs: number): Promise<Duplex>;
  /** UDP: datagrams to `addr` as packets; `onReply` gets each reply's payload. Absent for TCP. */
  openDatagrams?(addr: SocketAddr, onReply: (data: Buffer) => void): DatagramPackets;
}

const paths = new WeakMap<RequestState, PacketPath>();

/** Registers the packet path of `request` (its IP tunnel has an off-ramp). */
export function setPacketPath(request: RequestState, path: PacketPath): void {
  paths.set(request, path);
}

/**
 * The path and destination for a packets decision on `request` to `addr`; throws
 * `OXY_ERR_EGRESS_NO_PACKET_PATH` naming why there is none.
 */
export function packetPathFor(request: RequestState | null, addr: SocketAddr): PacketPath {
  const path = request === null ? undefined : paths.get(request);
  if (path === undefined) {
    const kind = request?.kind ?? 'connection';
    const why =
      kind === 'ip-tcp' || kind === 'ip-udp'
        ? 'its IP tunnel has no off-ramp (endpoints.<name>.ip.offramp)'
        : `a ${kind} unit is not a flow of an IP tunnel`;
    throw noPacketPath(`EgressDecision.packets cannot be carried out: ${why}`);
  }
  if (net.isIP(addr.host) === 0 || addr.port === 0)
    throw noPacketPath(`EgressDecision.packets needs an IP address and port, not ${addr.host}:${addr.port}`);
  return path;
}

/** The error for a packets decision that cannot be carried out. */
export function noPacketPath(message: string): OxyError {
  return new OxyError(OXY_ERR.EGRESS_NO_PACKET_PATH, message, { source: 'internal' });
}
