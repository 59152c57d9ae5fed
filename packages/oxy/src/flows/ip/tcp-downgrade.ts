/**
 * The stream→IP downgrade of `EgressDecision.packets` for an upgraded TCP flow (the seed's
 * "downgrade connection"): the stream runner connects, from inside the upgrade namespace, to
 * the decided destination (`UpgradeNamespace.connect`); the namespace kernel's packets for that
 * connection come out of the TUN device (the namespace's default route), have their source
 * rewritten from the namespace's address and the connection's local port to the client's own
 * address and port, and leave through the tunnel's IP off-ramp. The off-ramp's replies (the
 * reverse 5-tuple, claimed on the tunnel's off-ramp connection) are rewritten back to the local
 * address and port and written into the device, where the kernel's TCP takes them. So the far
 * side sees the client's own TCP flow, its handshake made by the namespace kernel.
 *
 * Ordering rules:
 * 1. The local port is chosen here (a rotating cursor over 1024–32767, below the kernel's
 *    ephemeral range where the listener's port lies) and its entry made before the connect is
 *    asked for, so the kernel's SYN already finds it.
 * 2. An entry lives until `lingerMs` after its socket closed (for the last ACKs and
 *    retransmitted FINs), or until its tunnel is released (the socket is then destroyed).
 * 3. Checksums are updated incrementally (`rewrite`, RFC 1624) both ways; a packet of another
 *    family than the client's is never made (such a decision is refused).
 * 4. An ICMP error from the off-ramp quoting the connection's packet is translated inside and
 *    out (`nat-icmp.ts`) before it is written into the device, so the kernel's TCP hears it.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SocketAddr } from '../../context/contexts.ts';
import { noPacketPath, type PacketPath } from '../../egress/packets.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { UpgradeNamespace } from '../../offramps/tun/namespace.ts';
import { addressBytes } from '../../protocols/ip/address.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';
import { rewrite } from './nat.ts';
import { translateIcmpError } from './nat-icmp.ts';
import { addressKey, packetEgressMetrics } from './packet-egress.ts';
import type { IpTunnelPort, PacketsOut } from './port.ts';

const FIRST_PORT = 1024;
const LAST_PORT = 32767;

/** One downgrade connection: the namespace side (local port) and the client side it wears. */
class DowngradeConn {
  readonly tunnel: IpTunnelPort;
  readonly out: PacketsOut;
  readonly local: Buffer;
  readonly localPort: number;
  readonly client: Buffer;
  readonly clientPort: number;
  readonly dst: Buffer;
  readonly dstPort: number;
  readonly key: string;
  /** Its claim on the off-ramp connection. */
  onPacket: (packet: IpPacket) => void = () => {};
  socket: net.Socket | null = null;
  gone = false;

  constructor(
    tunnel: IpTunnelPort,
    out: PacketsOut,
    local: Buffer,
    localPort: number,
    client: Buffer,
    clientPort: number,
    dst: Buffer,
    dstPort: number,
  ) {
    this.tunnel = tunnel;
    this.out = out;
    this.local = local;
    this.localPort = localPort;
    this.client = client;
    this.clientPort = clientPort;
    this.dst = dst;
    this.dstPort = dstPort;
    this.key = addressKey(dst, dstPort, client, clientPort, IP_PROTO.TCP);
  }
}

/** The downgrade connections of one upgrade service. */
export class TcpDowngrade {
  readonly #ns: UpgradeNamespace;
  readonly #local: { 4: string; 6: string };
  readonly #localBytes: { 4: Buffer; 6: Buffer };
  readonly #lingerMs: number;
  readonly #byPort = new Map<number, DowngradeConn>();
  #cursor = FIRST_PORT;

  /** `local`: the namespace's own addresses, the source of its connections. */
  constructor(ns: UpgradeNamespace, local: { 4: string; 6: string }, lingerMs: number) {
    this.#ns = ns;
    this.#local = local;
    this.#localBytes = { 4: addressBytes(local[4]), 6: addressBytes(local[6]) };
    this.#lingerMs = lingerMs;
  }

  /** Downgrade connections held now. */
  get size(): number {
    return this.#byPort.size;
  }

  /**
   * The packet path of the upgraded flow from `client`:`clientPort` on `tunnel`, or null when
   * the tunnel has no off-ramp (the decision is then refused by the egress pipeline).
   */
  pathFor(tunnel: IpTunnelPort, client: Buffer, clientPort: number): PacketPath | null {
    const out = tunnel.packets;
    if (out === undefined) return null;
    return {
      connectStream: (addr, timeoutMs) => this.#connect(tunnel, out, client, clientPort, addr, timeoutMs),
    };
  }

  async #connect(
    tunnel: IpTunnelPort,
    out: PacketsOut,
    client: Buffer,
    clientPort: number,
    addr: SocketAddr,
    timeoutMs: number,
  ): Promise<Duplex> {
    const dst = addressBytes(addr.host);
    if (dst.length !== client.length)
      throw noPacketPath(`EgressDecision.packets: ${addr.host} is not of the client's address family`);
    const v = dst.length === 4 ? 4 : 6;
    const localPort = this.#allocate();
    if (localPort === null)
      throw new OxyError(OXY_ERR.CONNECT_FAILED, 'downgrade: every local port of the namespace is in use', {
        source: 'internal',
      });
    const conn = new DowngradeConn(
      tunnel,
      out,
      this.#localBytes[v],
      localPort,
      client,
      clientPort,
      dst,
      addr.port,
    );
    this.#byPort.set(localPort, conn);
    conn.onPacket = (p) => this.#fromOffRamp(conn, p);
    out.claim(conn.key, conn.onPacket);
    packetEgressMetrics.flows_total({ protocol: 'tcp' }).inc();
    packetEgressMetrics.flows_active({ protocol: 'tcp' }).inc();
    let socket: net.Socket;
    try {
      socket = await this.#ns.connect({
        host: addr.host,
        port: addr.port,
        localAddress: this.#local[v],
        localPort,
        timeoutMs,
      });
    } catch (e) {
      this.#forget(conn);
      throw e;
    }
    if (conn.gone || tunnel.closed) {
      socket.destroy();
      this.#forget(conn);
      throw new OxyError(OXY_ERR.CLIENT_CLOSED, 'the IP tunnel closed during the downgrade connect');
    }
    conn.socket = socket;
    socket.setNoDelay(true);
    socket.once('close', () => {
      setTimeout(() => this.#forget(conn), this.#lingerMs).unref();
    });
    return socket;
  }

  /** The next free local port (rule 1), or null when all are taken. */
  #allocate(): number | null {
    const span = LAST_PORT - FIRST_PORT + 1;
    for (let i = 0; i < span; i++) {
      const port = this.#cursor;
      this.#cursor = port === LAST_PORT ? FIRST_PORT : port + 1;
      if (port !== this.#ns.port && !this.#byPort.has(port)) return port;
    }
    return null;
  }

  /**
   * A packet the namespace kernel wrote to the device: when it is a downgrade connection's, it
   * is rewritten to the client's addresses and sent through the off-ramp (true); else false.
   */
  fromKernel(p: IpPacket): boolean {
    if (this.#byPort.size === 0 || p.protocol !== IP_PROTO.TCP || p.buf.length < p.l4Offset + 20)
      return false;
    const conn = this.#byPort.get(p.buf.readUInt16BE(p.l4Offset));
    if (conn === undefined || conn.gone || conn.local.length !== p.addrLength) return false;
    if (!conn.local.equals(p.buf.subarray(p.srcOffset, p.srcOffset + p.addrLength))) return false;
    rewrite(p, conn.client, conn.clientPort, conn.dst, conn.dstPort);
    conn.out.send(p.buf);
    return true;
  }

  /**
   * A reply from the off-ramp: back to the namespace's address and local port, into the device.
   * An ICMP error about the connection (unreachable, packet too big) is translated inside and out
   * (`nat-icmp.ts`: it then comes from the destination), so the namespace kernel's TCP hears it.
   */
  #fromOffRamp(conn: DowngradeConn, p: IpPacket): void {
    if (conn.gone) return;
    if (p.protocol !== IP_PROTO.TCP) {
      const inside = {
        protocol: IP_PROTO.TCP,
        clientAddr: conn.local,
        clientPort: conn.localPort,
        originalDstAddr: conn.dst,
        originalDstPort: conn.dstPort,
      };
      const quotesUs = (addr: Buffer, port: number) =>
        port === conn.clientPort && addr.equals(conn.client) ? inside : undefined;
      if (translateIcmpError(p, quotesUs) === null) return;
    } else {
      if (p.buf.length < p.l4Offset + 20) return;
      rewrite(p, conn.dst, conn.dstPort, conn.local, conn.localPort);
    }
    try {
      this.#ns.tun.write([p.buf]);
    } catch {
      // Boundary: a refused write is a lost packet (TCP retransmits); never an exception here.
      packetEgressMetrics.packets_dropped_total({ reason: 'device_error' }).inc();
    }
  }

  /** The tunnel ended: its downgrade connections are destroyed and forgotten. */
  release(tunnel: IpTunnelPort): void {
    for (const conn of [...this.#byPort.values()]) if (conn.tunnel.id === tunnel.id) this.#forget(conn);
  }

  /** Forgets every connection (service shutdown). */
  close(): void {
    for (const conn of [...this.#byPort.values()]) this.#forget(conn);
  }

  #forget(conn: DowngradeConn): void {
    if (conn.gone) return;
    conn.gone = true;
    if (this.#byPort.get(conn.localPort) === conn) this.#byPort.delete(conn.localPort);
    conn.out.release(conn.key, conn.onPacket);
    if (conn.socket !== null && !conn.socket.destroyed) conn.socket.destroy();
    packetEgressMetrics.flows_active({ protocol: 'tcp' }).dec();
  }
}
