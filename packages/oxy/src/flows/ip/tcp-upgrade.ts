/**
 * The IP→TCP upgrade service (the seed's "From an IP flow to a TCP stream"): the packets of
 * TCP flows that the flow decision upgraded are NAT-ed into a TUN device inside the upgrade
 * namespace, where the kernel's TCP terminates them on one listener; each accepted socket comes
 * back to this process (the listener was passed over SCM_RIGHTS, so `accept` runs here) and
 * becomes a stream in the stream runner, whose target is the original destination recovered
 * from the NAT table (or the flow's redirect). The kernel's packets read from the device are
 * translated back (ICMP errors inside and out, `nat-icmp.ts`) and sent through the tunnel
 * port they belong to. One service per process, shared by every IP tunnel.
 *
 * Ordering rules:
 * 1. A flow starts only with a client SYN (no ACK): `UpgradeNat.map` claims its slot, scoped by
 *    the tunnel port's id so equal 5-tuples of two tunnels never meet. Any other packet of an
 *    unknown flow is answered with a RST, as a host without the connection would.
 * 2. A flow is forgotten (slot released, table entry removed) `closeLingerMs` after a RST or
 *    after both FINs passed, when idle past `idleTimeoutMs`, or when its tunnel is released
 *    (its accepted socket is then reset). A SYN on a closing flow's 5-tuple starts a new one.
 * 3. Client packets are written to the device in one batch per microtask (one per read batch
 *    of the caller); device reads come in batches of up to 64 packets.
 */
import type net from 'node:net';
import { counter, defineMetrics, gauge } from 'foundations/telemetry';
import type { SocketAddr } from '../../context/contexts.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import { startUpgradeNamespace, type UpgradeNamespace } from '../../offramps/tun/namespace.ts';
import { tcpReset } from '../../protocols/icmp/generate.ts';
import { addressBytes, formatAddress } from '../../protocols/ip/address.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { clampMss, TCP_FLAG } from '../../protocols/tcp/header.ts';
import type { Runtime } from '../../runtime.ts';
import { packetFlowKey } from './flow-key.ts';
import { type NatMapping, rewrite, UpgradeNat } from './nat.ts';
import type { IpTunnelPort, TcpUpgrade } from './port.ts';
import { TcpDowngrade } from './tcp-downgrade.ts';
import { resetSocket, runUpgradedStream } from './upgraded-stream.ts';

export type { IpTunnelPort, TcpUpgrade } from './port.ts';

/** Metrics of the upgrade service: flows, streams and refused packets (never per packet otherwise). */
export const ipTcpUpgradeMetrics = defineMetrics('ip_tcp_upgrade', {
  flows_active: gauge('Upgraded TCP flows held now (NAT slot and table entry).'),
  flows_total: counter('Upgraded TCP flows started (a client SYN claimed a slot).'),
  flows_ended_total: counter<{ reason: string }>(
    'Upgraded TCP flows forgotten, by reason (closed, reset, idle, released, shutdown).',
  ),
  streams_total: counter('Sockets accepted in the namespace and run in the stream runner.'),
  packets_dropped_total: counter<{ direction: 'up' | 'down'; reason: string }>(
    'Packets the upgrade dropped: up = from clients (not_tcp, fragment, no_flow, refused, write_failed), down = from the kernel (malformed, no_flow, tunnel_closed, send_failed, device_error).',
  ),
});

/** Settings of the upgrade service (all optional). */
export interface TcpUpgradeOptions {
  /** TUN device name in the namespace. Default 'oxy0'. */
  readonly device?: string;
  /** The device's MTU: the kernel's segments are at most this (and the client's MSS). Default 65000. */
  readonly mtu?: number;
  /** The IPv4 slot pool, routed into the device. Default 10.9.0.0/16. */
  readonly v4Pool?: string;
  /** The IPv6 slot pool. Default fd00:9::/64. */
  readonly v6Pool?: string;
  /** Most flows held at once. Default 65536. */
  readonly maxFlows?: number;
  /** How long a closed or reset flow keeps its slot for late packets (ms). Default 5000. */
  readonly closeLingerMs?: number;
  /** Flows idle this long are forgotten (ms). Default 2 h 10 min, as the tracker's established. */
  readonly idleTimeoutMs?: number;
  /**
   * Read the device into one reused buffer: no copy and no garbage per packet (at MTU 65,000,
   * most of the JS thread's and the garbage collector's work). Safe because every port's `send`
   * writes or copies the packet before it returns (the `IpTunnelPort` contract: SEQPACKET and
   * TUN queues copy, GUE and UDP sockets copy into their queue, CONNECT-IP frames a capsule).
   * Default true; false gives each packet its own buffer.
   */
  readonly reuseReadBuffers?: boolean;
}

/** The running service: the contract plus what tests and the benchmark read. */
export interface TcpUpgradeService extends TcpUpgrade {
  /** Flows held now (NAT slots); 0 once every flow ended and lingered. */
  readonly flows: number;
  /** Tunnel ports with flows now. */
  readonly ports: number;
}

const LISTENER_V4 = '10.0.0.1';
const LISTENER_V6 = 'fd00::1';
const { SYN, ACK, FIN, RST } = TCP_FLAG;

/** One upgraded flow: its slot, its tunnel, its accepted socket once there is one. */
class UpgradeFlow {
  readonly port: IpTunnelPort;
  readonly mapping: NatMapping;
  readonly redirect: SocketAddr | null;
  socket: net.Socket | null = null;
  finUp = false;
  finDown = false;
  /** The linger timer once the flow closed or reset. */
  ending: NodeJS.Timeout | null = null;

  constructor(port: IpTunnelPort, mapping: NatMapping, redirect: SocketAddr | null) {
    this.port = port;
    this.mapping = mapping;
    this.redirect = redirect;
  }
}

/**
 * Starts the upgrade service: the namespace (an unprivileged user namespace where the kernel
 * allows it, else, as root, a plain network namespace), its TUN device and listener, and the
 * NAT. Rejects with `OXY_ERR_NAMESPACE_FAILED` naming the refused step and how to allow it.
 */
export async function startTcpUpgrade(rt: Runtime, opts: TcpUpgradeOptions = {}): Promise<TcpUpgradeService> {
  const v4Pool = opts.v4Pool ?? '10.9.0.0/16';
  const v6Pool = opts.v6Pool ?? 'fd00:9::/64';
  const mtu = opts.mtu ?? 65000;
  const nsOpts = {
    device: opts.device ?? 'oxy0',
    mtu,
    addresses: [`${LISTENER_V4}/24`, `${LISTENER_V6}/64`],
    // The pools, and the default routes that take the downgrade connections' packets
    // (`EgressDecision.packets`, tcp-downgrade.ts) out of the device.
    routes: [v4Pool, v6Pool, '0.0.0.0/0', '::/0'],
    listenPort: 0,
    reuseReadBuffers: opts.reuseReadBuffers ?? true,
  };
  let ns: UpgradeNamespace;
  try {
    ns = await startUpgradeNamespace(nsOpts);
  } catch (e) {
    // Root can still make a network namespace where unprivileged user namespaces are refused.
    const unshareRefused = e instanceof OxyError && /: unshare was refused/.test(e.message);
    if (!unshareRefused || process.getuid?.() !== 0) throw e;
    ns = await startUpgradeNamespace({ ...nsOpts, userNamespace: false });
  }
  return new UpgradeService(rt, ns, opts, v4Pool, v6Pool, mtu);
}

class UpgradeService implements TcpUpgradeService {
  /** The device's MTU: the pipeline answers larger client packets with ICMP "too big". */
  readonly mtu: number;
  readonly #rt: Runtime;
  readonly #ns: UpgradeNamespace;
  readonly #nat: UpgradeNat;
  readonly #mss: number;
  readonly #linger: number;
  readonly #idle: number;
  readonly #listener: { 4: Buffer; 6: Buffer };
  /** The flows of each tunnel port, by port id. */
  readonly #byPort = new Map<number, Set<UpgradeFlow>>();
  /** Client packets waiting for this microtask's batch write. */
  #out: Buffer[] = [];
  readonly #sweep: NodeJS.Timeout;
  /** Streams whose egress decision sent them out as packets (tcp-downgrade.ts). */
  readonly #down: TcpDowngrade;
  #closed = false;

  constructor(
    rt: Runtime,
    ns: UpgradeNamespace,
    opts: TcpUpgradeOptions,
    v4: string,
    v6: string,
    mtu: number,
  ) {
    this.mtu = mtu;
    this.#rt = rt;
    this.#ns = ns;
    this.#linger = opts.closeLingerMs ?? 5000;
    this.#idle = opts.idleTimeoutMs ?? 7_800_000;
    // The larger IPv6 header bounds the one clamp for both families.
    this.#mss = mtu - 60;
    this.#nat = new UpgradeNat({
      name: 'tcp-upgrade',
      v4: { pool: v4, listener: { address: LISTENER_V4, port: ns.port } },
      v6: { pool: v6, listener: { address: LISTENER_V6, port: ns.port } },
      maxMappings: opts.maxFlows ?? 65536,
      // Flows are forgotten here (rule 2); the NAT's own expiry is never started.
      idleTimeoutMs: this.#idle,
    });
    this.#listener = { 4: addressBytes(LISTENER_V4), 6: addressBytes(LISTENER_V6) };
    this.#down = new TcpDowngrade(ns, { 4: LISTENER_V4, 6: LISTENER_V6 }, this.#linger);
    ns.tun.on('packets', (pkts) => this.#fromKernel(pkts));
    // A failed read or queued write is lost packets; TCP retransmits.
    ns.tun.on('error', () => dropDown('device_error'));
    ns.tun.setRef(false);
    ns.server.on('connection', (s: net.Socket) => this.#accepted(s));
    ns.server.unref();
    this.#sweep = setInterval(() => this.#expire(), Math.min(10_000, this.#idle));
    this.#sweep.unref();
  }

  get flows(): number {
    return this.#nat.size;
  }

  get ports(): number {
    return this.#byPort.size;
  }

  fromClient(port: IpTunnelPort, p: IpPacket, redirect: SocketAddr | null): void {
    if (this.#closed || port.closed) return;
    const why =
      p.protocol !== IP_PROTO.TCP || p.buf.length < p.l4Offset + 20
        ? 'not_tcp'
        : p.fragment !== null
          ? 'fragment'
          : null;
    if (why !== null) {
      dropUp(why);
      return;
    }
    const flags = p.buf[p.l4Offset + 13]!;
    const flow = this.#flowOf(port, p, flags, redirect);
    if (flow === null) return;
    const mapping = flow.mapping;
    rewrite(p, mapping.slotAddr, mapping.slotPort, this.#listener[mapping.version], this.#ns.port);
    // Also to the tunnel's MTU, so the kernel's segments fit the tunnel (RFC 6691: MTU − 40/60).
    if ((flags & SYN) !== 0)
      clampMss(
        p,
        port.mtu === undefined ? this.#mss : Math.min(this.#mss, port.mtu - (p.version === 4 ? 40 : 60)),
      );
    mapping.lastUsed = Date.now();
    if ((flags & (FIN | RST)) !== 0) this.#closing(flow, flags, true);
    if (this.#out.length === 0) queueMicrotask(() => this.#flush());
    this.#out.push(p.buf);
  }

  /** The flow of a client packet: found, or started by a SYN (rule 1); null when refused. */
  #flowOf(port: IpTunnelPort, p: IpPacket, flags: number, redirect: SocketAddr | null): UpgradeFlow | null {
    const scope = `${port.id}:`;
    const found = this.#nat.get(scope + packetFlowKey(p))?.data as UpgradeFlow | undefined;
    const isSyn = (flags & (SYN | ACK | RST)) === SYN;
    if (found !== undefined) {
      if (!isSyn || found.ending === null) return found;
      this.#forget(found, 'closed'); // a SYN on a flow that ended reuses the 5-tuple
    }
    if (!isSyn) {
      if ((flags & RST) === 0) this.#reset(port, p);
      dropUp('no_flow');
      return null;
    }
    const m = this.#nat.map(p, undefined, scope);
    if (typeof m === 'string') {
      this.#reset(port, p);
      dropUp('refused');
      return null;
    }
    const flow = new UpgradeFlow(port, m, redirect);
    m.data = flow;
    let set = this.#byPort.get(port.id);
    if (set === undefined) {
      set = new Set();
      this.#byPort.set(port.id, set);
    }
    set.add(flow);
    ipTcpUpgradeMetrics.flows_total().inc();
    ipTcpUpgradeMetrics.flows_active().inc();
    return flow;
  }

  release(port: IpTunnelPort): void {
    const set = this.#byPort.get(port.id);
    if (set === undefined) return;
    for (const flow of [...set]) this.#forget(flow, 'released');
    this.#byPort.delete(port.id);
    this.#down.release(port);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const set of [...this.#byPort.values()]) for (const flow of [...set]) this.#forget(flow, 'shutdown');
    this.#byPort.clear();
    this.#down.close();
    this.#nat.close();
    await this.#ns.close();
  }

  #flush(): void {
    let batch = this.#out;
    this.#out = [];
    while (!this.#closed && batch.length > 0) {
      try {
        this.#ns.tun.write(batch);
        return;
      } catch {
        // Boundary: the kernel refused the batch's first packet (the rest were not tried): drop
        // that one, write the others. Thrown here, it would end the process from a microtask.
        dropUp('write_failed');
        batch = batch.slice(1);
      }
    }
  }

  /** Answers a client packet with a RST, as a host without its connection would. */
  #reset(port: IpTunnelPort, p: IpPacket): void {
    const rst = tcpReset(p);
    if (rst !== null) port.send(rst);
  }

  /** Packets the kernel wrote to the device: translated back and sent to their tunnel. */
  #fromKernel(pkts: Buffer[]): void {
    const now = Date.now();
    for (const b of pkts) {
      const v = b[0]! >> 4;
      if (v !== 4 && v !== 6) continue;
      let p: IpPacket;
      try {
        p = parseIp(b);
      } catch {
        dropDown('malformed'); // Boundary: the kernel's packets parse; count the impossible.
        continue;
      }
      if (this.#down.fromKernel(p)) continue; // a downgrade connection's, out through the off-ramp
      const m = this.#nat.rewriteInbound(p, now);
      const flow = m?.data as UpgradeFlow | undefined;
      if (flow === undefined) {
        // Router solicitations and the kernel's answers after a flow was forgotten.
        if (p.protocol === IP_PROTO.TCP) dropDown('no_flow');
        continue;
      }
      if (flow.port.closed) {
        dropDown('tunnel_closed');
        continue;
      }
      if (p.protocol === IP_PROTO.TCP) {
        const flags = p.buf[p.l4Offset + 13]!;
        if ((flags & (FIN | RST)) !== 0) this.#closing(flow, flags, false);
      }
      try {
        flow.port.send(p.buf);
      } catch {
        // Boundary: a port's failure must not end the process from the device's read callback.
        dropDown('send_failed');
      }
    }
  }

  /** Notes a FIN or RST; a flow reset, or with both FINs passed, is forgotten after the linger. */
  #closing(flow: UpgradeFlow, flags: number, up: boolean): void {
    if ((flags & FIN) !== 0) {
      if (up) flow.finUp = true;
      else flow.finDown = true;
    }
    const reset = (flags & RST) !== 0;
    if (flow.ending !== null || !(reset || (flow.finUp && flow.finDown))) return;
    const reason = reset ? 'reset' : 'closed';
    flow.ending = setTimeout(() => this.#forget(flow, reason), this.#linger);
    flow.ending.unref();
  }

  /** Forgets a flow: its slot, its table entries, and (if still open) its accepted socket. */
  #forget(flow: UpgradeFlow, reason: string): void {
    if (this.#nat.get(flow.mapping.flowKey) !== flow.mapping) return;
    if (flow.ending !== null) clearTimeout(flow.ending);
    this.#nat.release(flow.mapping);
    const set = this.#byPort.get(flow.port.id);
    set?.delete(flow);
    if (set?.size === 0) this.#byPort.delete(flow.port.id);
    if (flow.socket !== null && !flow.socket.destroyed) resetSocket(flow.socket);
    ipTcpUpgradeMetrics.flows_active().dec();
    ipTcpUpgradeMetrics.flows_ended_total({ reason }).inc();
  }

  #expire(): void {
    const now = Date.now();
    for (const set of [...this.#byPort.values()])
      for (const flow of [...set]) if (now - flow.mapping.lastUsed >= this.#idle) this.#forget(flow, 'idle');
  }

  /** A connection the namespace's kernel accepted: its flow's stream, in the stream runner. */
  #accepted(socket: net.Socket): void {
    const m = this.#nat.originalDestination(socket.remoteAddress ?? '', socket.remotePort ?? 0);
    const flow = m?.data as UpgradeFlow | undefined;
    if (flow === undefined || flow.port.closed || flow.socket !== null) {
      socket.resetAndDestroy(); // forgotten before the kernel's accept queue got to it
      return;
    }
    flow.socket = socket;
    socket.setNoDelay(true);
    ipTcpUpgradeMetrics.streams_total().inc();
    const dst = flow.mapping;
    const target = flow.redirect ?? { host: formatAddress(dst.originalDstAddr), port: dst.originalDstPort };
    const packets = this.#down.pathFor(flow.port, dst.clientAddr, dst.clientPort);
    void runUpgradedStream(this.#rt, flow.port.ingress, socket, target, packets);
  }
}

function dropUp(reason: string): void {
  ipTcpUpgradeMetrics.packets_dropped_total({ direction: 'up', reason }).inc();
}

function dropDown(reason: string): void {
  ipTcpUpgradeMetrics.packets_dropped_total({ direction: 'down', reason }).inc();
}

/** Whether `e` is the upgrade namespace's refusal (for callers that skip or explain). */
export function isNamespaceRefusal(e: unknown): e is OxyError {
  return e instanceof OxyError && e.code === OXY_ERR.NAMESPACE_FAILED;
}
