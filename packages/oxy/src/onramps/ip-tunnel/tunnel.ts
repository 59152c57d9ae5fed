/**
 * One IP tunnel, whatever carries it (a SEQPACKET connection, a GUE tunnel): its ingress
 * connection, the tunnel decision, its port, and its IP pipeline. The carriers only frame
 * packets; everything a tunnel decides is here, once.
 *
 * Order: the connection is counted → `IngressHook.handleConnection` → `IpTunnelHook.handleTunnel`
 * (with the tunnel's context) → the pipeline opens and the packets that waited go in, in order
 * (at most `ip.max_pending_packets`) → … → close: the pipeline closes (flows end, sessions
 * close) → `IngressHook.handleConnectionClose` once.
 */
import type { SocketAddr } from '../../context/contexts.ts';
import { type EndpointState, IngressConnection } from '../../context/state.ts';
import { ipPipelineMetrics } from '../../flows/ip/metrics.ts';
import { type IpPipeline, newTunnelId, openIpPipeline } from '../../flows/ip/pipeline.ts';
import type { IpTunnelPort } from '../../flows/ip/port.ts';
import type { IngressDecision } from '../../hooks/ingress.ts';
import type { Runtime } from '../../runtime.ts';
import { forkConnection, inConnectionContext } from '../../telemetry/fork.ts';
import { ingressMetrics } from '../../telemetry/metrics.ts';
import { ipSettingsOf } from './settings.ts';

/** How a carrier sends one packet to its client; false when it could not (counted as a drop). */
export type SendPacket = (packet: Buffer) => boolean;

/** A running IP tunnel. */
export interface IpTunnel {
  readonly conn: IngressConnection;
  /** `opening` until the hooks answered, then `open`, or `refused`; `closed` at the end. */
  readonly state: 'opening' | 'open' | 'refused' | 'closed';
  /** One raw IP packet from the client. */
  fromClient(packet: Buffer): void;
  /** Ends the tunnel (idempotent). */
  close(reason: string): void;
}

/** Options of {@link openIpTunnel}. */
export interface OpenIpTunnelOptions {
  readonly peer: SocketAddr;
  readonly local: SocketAddr;
  readonly protocol: 'ip_seqpacket' | 'ip_gue';
  /** What the tunnel opened with: the first SEQPACKET message, the GUE extension fields. */
  readonly context: Uint8Array;
  readonly send: SendPacket;
  /** The tunnel was refused (hooks said block or failed): a connected carrier closes. */
  readonly refused?: () => void;
  /** The largest IP packet the carrier holds, when below 65,535 (`IpTunnelPort.mtu`). */
  readonly mtu?: number;
}

/** Opens a tunnel on `endpoint`; its hooks run now (their answer may come later). */
export function openIpTunnel(rt: Runtime, endpoint: EndpointState, o: OpenIpTunnelOptions): IpTunnel {
  return new Tunnel(rt, endpoint, o);
}

class Tunnel implements IpTunnel {
  readonly conn: IngressConnection;
  state: IpTunnel['state'] = 'opening';
  readonly #rt: Runtime;
  readonly #o: OpenIpTunnelOptions;
  readonly #maxPending: number;
  #pipeline: IpPipeline | null = null;
  #pending: Buffer[] | null = null;
  #bytesIn = 0;
  #bytesOut = 0;
  readonly #port: IpTunnelPort;

  constructor(rt: Runtime, endpoint: EndpointState, o: OpenIpTunnelOptions) {
    this.#rt = rt;
    this.#o = o;
    this.#maxPending = ipSettingsOf(endpoint.settings).max_pending_packets;
    const conn = new IngressConnection(endpoint, { peer: o.peer, local: o.local }, o.protocol, rt.ext);
    this.conn = conn;
    rt.connections.add(conn);
    const labels = { endpoint: endpoint.name };
    ingressMetrics.connections_total(labels).inc();
    ingressMetrics.connections_active(labels).inc();
    ipPipelineMetrics.tunnels_total(labels).inc();
    ipPipelineMetrics.tunnels_active(labels).inc();
    const dropped = ipPipelineMetrics.packets_dropped_total({
      endpoint: endpoint.name,
      reason: 'tunnel_full',
    });
    const self = this;
    this.#port = {
      id: newTunnelId(),
      ingress: conn,
      get closed() {
        return self.state === 'closed';
      },
      send: (packet) => {
        if (this.state === 'closed' || !o.send(packet)) {
          dropped.inc();
          return;
        }
        this.#bytesOut += packet.length;
      },
      ...(o.mtu === undefined ? {} : { mtu: o.mtu }),
    };
    forkConnection(conn, () => void this.#decide());
  }

  fromClient(packet: Buffer): void {
    this.#bytesIn += packet.length;
    const p = this.#pipeline;
    if (p !== null) {
      p.fromClient(packet);
      return;
    }
    if (this.state !== 'opening') {
      this.#drop(this.state === 'refused' ? 'tunnel_refused' : 'tunnel_closed');
      return;
    }
    this.#pending ??= [];
    if (this.#pending.length >= this.#maxPending) this.#drop('pending_full');
    else this.#pending.push(Buffer.from(packet));
  }

  close(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.conn.closeReason === 'client_closed') this.conn.closeReason = reason;
    this.#pending = null;
    inConnectionContext(this.conn, () => {
      this.#pipeline?.close(reason);
      this.#pipeline = null;
      this.#finish();
    });
  }

  async #decide(): Promise<void> {
    const rt = this.#rt;
    const ingress = rt.hooks.ingressConnection;
    const tunnel = rt.hooks.ipTunnel;
    if (ingress !== null && !(await this.#ask('IngressHook.handleConnection', () => ingress(this.conn))))
      return;
    if (
      tunnel !== null &&
      !(await this.#ask('IpTunnelHook.handleTunnel', () => tunnel(this.#o.context, this.conn)))
    )
      return;
    if (this.state !== 'opening') return;
    this.state = 'open';
    this.#pipeline = openIpPipeline(rt, this.#port);
    const pending = this.#pending;
    this.#pending = null;
    if (pending !== null) for (const p of pending) this.#pipeline.fromClient(p);
  }

  /** Runs one deciding hook; false (and the tunnel refused) unless it allowed. */
  async #ask(name: string, call: () => IngressDecision | Promise<IngressDecision>): Promise<boolean> {
    let d: IngressDecision;
    try {
      d = await call();
    } catch (e) {
      this.#rt.hookFailed(name, e);
      this.#refuse('OXY_ERR_HOOK_FAILED');
      return false;
    }
    if (this.state !== 'opening') return false;
    if (d.kind === 'block') {
      this.#refuse('blocked');
      return false;
    }
    return true;
  }

  #refuse(reason: string): void {
    if (this.state !== 'opening') return;
    this.state = 'refused';
    this.conn.closeReason = reason;
    ingressMetrics.connections_failed_total({ endpoint: this.conn.endpoint.name, reason }).inc();
    if (this.#pending !== null) for (const _ of this.#pending) this.#drop('tunnel_refused');
    this.#pending = null;
    this.#o.refused?.();
  }

  #drop(reason: string): void {
    ipPipelineMetrics.packets_dropped_total({ endpoint: this.conn.endpoint.name, reason }).inc();
  }

  #finish(): void {
    const rt = this.#rt;
    const labels = { endpoint: this.conn.endpoint.name };
    rt.connections.delete(this.conn);
    this.conn.closed = true;
    ingressMetrics.connections_active(labels).dec();
    ipPipelineMetrics.tunnels_active(labels).dec();
    const hook = rt.hooks.ingressConnectionClose;
    if (hook === null) return;
    try {
      hook(
        {
          bytesIn: this.#bytesIn,
          bytesOut: this.#bytesOut,
          durationMs: performance.now() - this.conn.startedAt,
          requests: this.conn.requests,
          closeReason: this.conn.closeReason,
        },
        this.conn,
      );
    } catch (e) {
      rt.hookFailed('IngressHook.handleConnectionClose', e);
    }
  }
}
