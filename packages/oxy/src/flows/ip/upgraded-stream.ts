/**
 * The stream of an upgraded IP flow: the socket the upgrade namespace's kernel accepted, run by
 * the stream runner like a `tcp` endpoint's connection (egress hooks and decisions, DNS,
 * `blocked_cidrs`, connect, splice or the addon's whole tunnel, one audit record of kind
 * `ip-tcp`), on the tunnel's ingress connection.
 *
 * Ordering rule: the client's TCP is already established with the namespace kernel when the
 * socket arrives, so there is no answer to write; a refusal resets the socket, and the client
 * sees the RST through its tunnel.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../../context/contexts.ts';
import { type IngressConnection, RequestState } from '../../context/state.ts';
import { type PacketPath, setPacketPath } from '../../egress/packets.ts';
import type { Runtime } from '../../runtime.ts';
import { forkRequest } from '../../telemetry/fork.ts';
import { runStream, type SpliceableClient, type StreamIngress } from '../stream/runner.ts';

/**
 * Runs an accepted upgraded socket to `target` in the stream runner. `packets` is the flow's
 * way out as IP packets (`EgressDecision.packets`) when its tunnel has an off-ramp. Never throws.
 */
export function runUpgradedStream(
  rt: Runtime,
  conn: IngressConnection,
  socket: net.Socket,
  target: SocketAddr,
  packets: PacketPath | null = null,
): Promise<void> {
  conn.requests++;
  conn.tunnels++;
  const request = new RequestState(conn, 'ip-tcp', 'TCP', target, rt.ext);
  if (packets !== null) setPacketPath(request, packets);
  // Nothing is read from the client until the upstream is connected (or the addon takes it).
  socket.pause();
  return forkRequest(request, () => runStream(rt, request, new UpgradedIngress(socket))).finally(() => {
    conn.tunnels--;
  });
}

/** Resets a socket; one whose handle the splice took is destroyed, which ends the splice. */
export function resetSocket(s: net.Socket): void {
  // Without a handle, resetAndDestroy would destroy with an ERR_SOCKET_CLOSED error event.
  if ((s as net.Socket & { _handle: unknown })._handle) s.resetAndDestroy();
  else s.destroy();
}

const EMPTY = Buffer.alloc(0);

/** An upgraded flow's accepted socket as the stream runner sees it. */
class UpgradedIngress implements StreamIngress {
  readonly #socket: net.Socket;

  constructor(socket: net.Socket) {
    this.#socket = socket;
  }

  get closed(): boolean {
    return this.#socket.destroyed;
  }

  accept(): Duplex {
    return this.#socket;
  }

  reject(): void {
    resetSocket(this.#socket);
  }

  spliceable(): SpliceableClient | null {
    return this.#socket.writableLength > 0 ? null : { socket: this.#socket, early: null, head: EMPTY };
  }
}
