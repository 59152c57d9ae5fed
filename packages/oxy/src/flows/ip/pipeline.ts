/**
 * The IP pipeline of one tunnel: every on-ramp (SEQPACKET, GUE, CONNECT-IP) hands it the
 * client's raw IP packets and a port to answer through; it turns flows into streams and
 * datagram sessions, and their replies back into packets.
 *
 * Order per client packet: parse (strict; malformed packets are dropped by parser reason) →
 * reassemble fragments (bounded) → ICMP echo to the gateway answered here → flow tracker → on a
 * new flow, `IpFlowHook.handleFlow` (or the default: upgrade TCP and UDP, drop the rest) → the
 * packet MTU check (the tunnel's: `ip.mtu` or the carrier's `port.mtu`, and the upgrade device's
 * for upgraded TCP; over it, ICMP too big) → `handlePacket('up')` → the flow's way out: the IP→TCP upgrade service, the
 * flow's datagram session, the IP off-ramp, a drop, or a refusal (TCP RST, ICMP unreachable).
 * Order per reply: the upgrade service, the session (downgraded with `buildUdpPacket`) or the
 * off-ramp → tracker (TCP state both ways) → `handlePacket('down')` → the tunnel. A packet from
 * the off-ramp goes first to the flow that claimed its key (`EgressDecision.packets`,
 * `packet-egress.ts`), and only otherwise to the tunnel's forwarded flows.
 *
 * Packets of a flow whose decision or upgrade is still pending wait in order, at most
 * `ip.max_pending_packets`, copied. A flow ends when the tracker ends it (idle, closed, reset,
 * evicted) or when the tunnel closes: its session closes and `handleFlowEnd` fires once.
 *
 * Cost: with no `IpFlowHook`, the default decision is taken in the same turn and no flow view
 * is built for a hook; without `handlePacket`, no verdict is asked for.
 */

import { log } from 'foundations/telemetry';
import type { IpDirection, IpFlowDecision } from '../../hooks/ip.ts';
import { ipSettingsOf } from '../../onramps/ip-tunnel/settings.ts';
import { ipGatewaysOf } from '../../onramps/masque/ip-pool.ts';
import {
  echoReply,
  icmpTimeExceeded,
  icmpUnreachable,
  packetTooBig,
  tcpReset,
} from '../../protocols/icmp/generate.ts';
import { addressBytes } from '../../protocols/ip/address.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../../protocols/ip/packet.ts';
import { isPacketError } from '../../protocols/ip/packet-error.ts';
import { Reassembler } from '../../protocols/ip/reassembly.ts';
import { udpPayload } from '../../protocols/udp/header.ts';
import type { Runtime } from '../../runtime.ts';
import { inConnectionContext } from '../../telemetry/fork.ts';
import {
  applyPacketHook,
  type FlowCtl,
  flowEndInfo,
  isEchoTo,
  newFlowCtl,
  trackerOptions,
} from './flow-ctl.ts';
import { packetFlowKey } from './flow-key.ts';
import { type FlowEndReason, FlowTracker, type IpFlow } from './flow-tracker.ts';
import { ipPipelineMetrics } from './metrics.ts';
import { IpOffRamp } from './offramp.ts';
import { datagramPath, PacketClaims } from './packet-egress.ts';
import type { IpTunnelPort, TcpUpgrade } from './port.ts';
import { openUdpFlow } from './udp-flow.ts';

/** The IP pipeline of one tunnel: on-ramps (SEQPACKET, GUE, and CONNECT-IP from branch masque3) feed it packets. */
export interface IpPipeline {
  fromClient(packet: Buffer): void;
  close(reason: string): void;
}

let nextPortId = 1;

/** A process-unique id for a tunnel's port (on-ramps number their tunnels with it). */
export function newTunnelId(): number {
  return nextPortId++;
}

/** Opens the IP pipeline of the tunnel behind `port`. */
export function openIpPipeline(rt: Runtime, port: IpTunnelPort): IpPipeline {
  return new TunnelPipeline(rt, port);
}

class TunnelPipeline implements IpPipeline {
  readonly #rt: Runtime;
  readonly #port: IpTunnelPort;
  /** The port the upgrade service answers through: replies pass the tracker and `handlePacket`. */
  readonly #inner: IpTunnelPort;
  readonly #endpoint: string;
  readonly #tracker: FlowTracker;
  readonly #reassembler: Reassembler;
  readonly #gw4: Buffer;
  readonly #gw6: Buffer;
  readonly #mtu: number;
  readonly #maxPending: number;
  readonly #offrampPath: string | null;
  #offramp: IpOffRamp | null = null;
  /** Flows sent out as packets by an egress decision: their replies from the off-ramp. */
  readonly #claims = new PacketClaims();
  #tcp: TcpUpgrade | null = null;
  /** The MTU of upgraded TCP flows: the tunnel's, or the upgrade device's when smaller. */
  #tcpMtu = 0;
  #tcpFailed = false;
  #tcpStarting: Promise<void> | null = null;
  #closed = false;
  readonly #expiry: NodeJS.Timeout;
  readonly #drops = new Map<string, { inc(n?: number): void }>();
  readonly #dropFn = (reason: string): void => this.#drop(reason);

  constructor(rt: Runtime, port: IpTunnelPort) {
    this.#rt = rt;
    this.#port = port;
    const conn = port.ingress;
    this.#endpoint = conn.endpoint.name;
    const ip = ipSettingsOf(conn.endpoint.settings);
    // A CONNECT-IP tunnel's gateway is its pool's first address (`masque.ip_pool`), the address
    // its client was told in ADDRESS_ASSIGN's routes; an IP tunnel endpoint's is `ip.gateway_*`.
    const pool = ipGatewaysOf(conn.endpoint);
    this.#gw4 = addressBytes(pool?.v4 ?? ip.gateway_v4);
    this.#gw6 = addressBytes(pool?.v6 ?? ip.gateway_v6);
    // The tunnel's MTU: `ip.mtu`, or what the carrier holds when that is less (RFC 1191/8201:
    // the client learns it from the "too big" answers to larger packets).
    this.#mtu = Math.min(ip.mtu, port.mtu ?? IP_MAX);
    this.#maxPending = ip.max_pending_packets;
    this.#offrampPath = ip.offramp;
    this.#tracker = new FlowTracker(trackerOptions(this.#endpoint, ip));
    this.#tracker.subscribe({ handleFlowEnd: (flow, reason) => this.#flowEnded(flow, reason) });
    this.#tracker.start();
    this.#reassembler = new Reassembler({
      name: this.#endpoint,
      onTimeout: (first) => this.#icmp(icmpTimeExceeded(first, 1), 'time_exceeded'),
    });
    // Fragments that never complete time out here too, not only when the next fragment comes.
    this.#expiry = setInterval(() => {
      if (this.#reassembler.pending > 0) this.#reassembler.expire();
    }, 1000).unref();
    const self = this;
    this.#inner = {
      id: port.id,
      ingress: conn,
      get closed() {
        return port.closed || self.#closed;
      },
      send: (packet) => this.#fromInside(packet),
      packets:
        this.#offrampPath === null
          ? undefined
          : {
              send: (packet) => this.#offrampConn().send(packet),
              claim: (key, onPacket) => this.#claims.claim(key, onPacket),
              release: (key, onPacket) => this.#claims.release(key, onPacket),
            },
      mtu: this.#mtu,
    };
  }

  /** `buf` parsed, or null after counting it dropped by its reason (`malformed` if unknown). */
  #parse(buf: Buffer): IpPacket | null {
    try {
      return parseIp(buf);
    } catch (e) {
      this.#drop(isPacketError(e) ? e.reason : 'malformed');
      return null;
    }
  }

  fromClient(buf: Buffer): void {
    if (this.#closed) return;
    let p = this.#parse(buf);
    if (p === null) return;
    if (p.fragment !== null) {
      const whole = this.#reassembler.push(p);
      if (whole === null) return;
      p = whole;
    }
    if (isEchoTo(p, this.#gw4, this.#gw6)) {
      this.#icmp(echoReply(p), 'echo_reply');
      return;
    }
    const r = this.#tracker.observe(p);
    if (r.kind === 'untracked') {
      this.#drop(r.reason);
      return;
    }
    const flow = r.flow;
    if (r.related) {
      // The client's ICMP error about a flow: only an off-ramp can use it.
      const c = flow.data as FlowCtl | null;
      if (c?.way === 'forward') this.#forward(p);
      else this.#drop('icmp_error');
      return;
    }
    if (r.isNew) this.#decide(flow);
    this.#carry(flow.data as FlowCtl, p);
  }

  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#expiry);
    this.#tracker.close();
    this.#offramp?.close();
    this.#tcp?.release(this.#inner);
    log.debug('IP tunnel pipeline closed', { reason });
  }

  /** Takes the flow's decision: the hook's (maybe later), or the default one now. */
  #decide(flow: IpFlow): void {
    const c = newFlowCtl(flow);
    const hook = this.#rt.hooks.ipFlow;
    if (hook === null) {
      this.#apply(flow, c, c.view.protocol === 'tcp' || c.view.protocol === 'udp' ? UPGRADE : DROP_PROTOCOL);
      return;
    }
    let d: IpFlowDecision | Promise<IpFlowDecision>;
    try {
      // In the tunnel's telemetry context, so what the hook logs carries the connection's fields.
      const conn = this.#port.ingress;
      const t = conn.telemetry;
      d = t === null ? hook(c.view, conn) : t.apply(() => hook(c.view, conn));
    } catch (e) {
      this.#hookFailed(flow, c, e);
      return;
    }
    if (!(d instanceof Promise)) {
      this.#apply(flow, c, d);
      return;
    }
    d.then(
      (decision) => this.#settled(flow, c, decision),
      (e: unknown) => this.#settled(flow, c, null, e),
    );
  }

  #hookFailed(flow: IpFlow, c: FlowCtl, e: unknown): void {
    inConnectionContext(this.#port.ingress, () => this.#rt.hookFailed('IpFlowHook.handleFlow', e));
    this.#apply(flow, c, { kind: 'reject', reason: 'hook_failed' });
  }

  /** An async decision arrived: apply it and release the packets that waited. */
  #settled(flow: IpFlow, c: FlowCtl, d: IpFlowDecision | null, e?: unknown): void {
    if (c.way !== 'deciding') return; // the flow ended meanwhile
    if (d === null) this.#hookFailed(flow, c, e);
    else this.#apply(flow, c, d);
    this.#flush(c);
  }

  /** Sets the flow's way from decision `d`. */
  #apply(flow: IpFlow, c: FlowCtl, d: IpFlowDecision): void {
    c.decision = d.kind;
    ipPipelineMetrics.flows_decided_total({ endpoint: this.#endpoint, decision: d.kind }).inc();
    switch (d.kind) {
      case 'drop':
      case 'reject':
        c.way = d.kind;
        c.reason = d.reason;
        return;
      case 'forward':
        if (this.#offrampPath === null) {
          c.way = 'reject';
          c.reason = 'no_offramp';
        } else c.way = 'forward';
        return;
      case 'redirect':
      case 'upgrade':
        c.redirect = d.kind === 'redirect' ? d.addr : null;
        // The session opens on the first packet `handlePacket` lets through (see #carry).
        if (flow.protocol === IP_PROTO.UDP) c.way = 'udp';
        else if (flow.protocol === IP_PROTO.TCP) this.#startTcp(c);
        else {
          c.way = 'drop';
          c.reason = 'protocol';
        }
        return;
    }
  }

  #openUdp(c: FlowCtl, first: IpPacket): void {
    const flow = c.flow;
    const target = c.redirect ?? c.view.dst;
    const out = this.#inner.packets;
    const session = openUdpFlow(
      this.#rt,
      this.#port.ingress,
      flow,
      target,
      (packet) => this.#toClient(c, packet),
      performance.now(),
      out === undefined ? null : datagramPath(out, flow.src, flow.srcPort, this.#dropFn),
    );
    c.session = session;
    const firstCopy = Buffer.from(first.buf);
    void session.opened.then((o) => {
      if (o.open || c.way !== 'udp') return;
      // Blocked or unreachable: the client hears it as ICMP, later packets too.
      c.way = 'reject';
      c.reason = 'egress_refused';
      this.#refuse(parseIp(firstCopy));
      session.close('refused');
    });
  }

  #startTcp(c: FlowCtl): void {
    if (this.#tcp !== null) {
      c.way = 'tcp';
      return;
    }
    if (this.#tcpFailed) {
      c.way = 'reject';
      c.reason = 'tcp_upgrade_unavailable';
      return;
    }
    c.way = 'starting';
    this.#tcpStarting ??= this.#rt.tcpUpgrade().then(
      (up) => {
        this.#tcp = up;
        this.#tcpMtu = Math.min(this.#mtu, up.mtu ?? IP_MAX);
      },
      (e: unknown) => {
        this.#tcpFailed = true;
        log.warn('IP→TCP upgrade unavailable: TCP flows are refused', { err: e });
      },
    );
    void this.#tcpStarting.then(() => {
      if (c.way !== 'starting') return;
      if (this.#tcp !== null) c.way = 'tcp';
      else {
        c.way = 'reject';
        c.reason = 'tcp_upgrade_unavailable';
      }
      this.#flush(c);
    });
  }

  #flush(c: FlowCtl): void {
    const pending = c.pending;
    c.pending = null;
    if (pending !== null) for (const p of pending) this.#carry(c, p);
  }

  /** One client packet of a flow whose way is known (or held while it is not). */
  #carry(c: FlowCtl, p: IpPacket): void {
    if (this.#closed) return;
    switch (c.way) {
      case 'deciding':
      case 'starting': {
        c.pending ??= [];
        if (c.pending.length >= this.#maxPending) this.#drop('pending_full');
        else c.pending.push(copyPacket(p));
        return;
      }
      case 'drop':
        this.#drop(c.reason);
        return;
      case 'reject':
        this.#drop(c.reason);
        this.#refuse(p);
        return;
    }
    const mtu = c.way === 'tcp' ? this.#tcpMtu : this.#mtu;
    if (p.buf.length > mtu) {
      this.#drop('too_big');
      this.#icmp(packetTooBig(p, mtu), 'too_big');
      return;
    }
    const q = this.#hooked(c, p, 'up');
    if (q === null) return;
    switch (c.way) {
      case 'tcp':
        (this.#tcp as TcpUpgrade).fromClient(this.#inner, q, c.redirect);
        return;
      case 'udp': {
        if (c.session === null) this.#openUdp(c, q);
        let payload: Buffer;
        try {
          payload = udpPayload(q);
        } catch (e) {
          this.#drop(isPacketError(e) ? e.reason : 'malformed');
          return;
        }
        c.session?.fromClientData(payload, performance.now());
        return;
      }
      case 'forward':
        if (q.ttl <= 1) {
          this.#drop('ttl_exceeded');
          this.#icmp(
            icmpTimeExceeded(q, 0, { from: q.version === 4 ? this.#gw4 : this.#gw6 }),
            'time_exceeded',
          );
          return;
        }
        this.#forward(q);
        return;
    }
  }

  #forward(p: IpPacket): void {
    this.#offrampConn().send(p.buf);
  }

  /** The tunnel's off-ramp connection, opened on first use. */
  #offrampConn(): IpOffRamp {
    this.#offramp ??= new IpOffRamp(
      this.#offrampPath as string,
      { endpoint: this.#endpoint, conn: this.#port.ingress.id, tunnel: this.#port.id },
      this.#maxPending,
      (packet) => this.#fromOffRamp(packet),
      (reason) => this.#drop(reason),
    );
    return this.#offramp;
  }

  /**
   * A packet from the off-ramp: a claimed flow's (rule in `packet-egress.ts`), else a forwarded
   * flow's. A late packet of a flow sent out by `EgressDecision.packets` has the 5-tuple of the
   * client's upgraded flow; it is dropped before it can touch that flow's state or reach the client.
   */
  #fromOffRamp(buf: Buffer): void {
    if (this.#closed) return;
    const p = this.#parse(buf);
    if (p === null || this.#claims.deliver(p)) return;
    const known = p.fragment === null ? this.#tracker.get(packetFlowKey(p)) : undefined;
    if (known !== undefined && (known.data as FlowCtl | null)?.way !== 'forward') {
      this.#drop('unsolicited');
      return;
    }
    this.#fromInside(buf, true);
  }

  /** `handlePacket` when the app has one: the packet to carry on with, or null (dropped). */
  #hooked(c: FlowCtl, p: IpPacket, direction: IpDirection): IpPacket | null {
    const hook = this.#rt.hooks.ipPacket;
    if (hook === null) return p;
    return applyPacketHook(this.#rt, hook, this.#port.ingress, c, p, direction, this.#dropFn);
  }

  /**
   * A reply from inside (the upgrade service, the off-ramp): tracked, hooked, sent to the client.
   * From the off-ramp (`offramp`), only a forwarded flow's packets (and ICMP errors) pass.
   */
  #fromInside(buf: Buffer, offramp = false): void {
    if (this.#closed || this.#port.closed) return;
    let p: IpPacket;
    try {
      p = parseIp(buf);
    } catch (e) {
      this.#drop(isPacketError(e) ? e.reason : 'malformed');
      return;
    }
    const r = this.#tracker.observe(p);
    if (r.kind === 'untracked') {
      // An ICMP error from inside about no flow, or a RST for one already gone: nobody to tell.
      this.#drop(r.reason);
      return;
    }
    if (r.isNew) {
      // Inside may not open flows towards the client.
      this.#tracker.remove(r.flow, 'removed');
      this.#drop('unsolicited');
      return;
    }
    const c = r.flow.data as FlowCtl;
    if (offramp && c.way !== 'forward') {
      this.#drop('unsolicited');
      return;
    }
    const q = this.#hooked(c, p, 'down');
    if (q !== null) this.#port.send(q.buf);
  }

  /** A reply packet built here (a UDP downgrade): counted on its flow, hooked, sent. */
  #toClient(c: FlowCtl, packet: Buffer): void {
    if (this.#closed || this.#port.closed) return;
    // Built here, so it parses; parsed again to keep the tracker's counts and state both ways.
    const p = parseIp(packet);
    this.#tracker.observe(p);
    const q = this.#hooked(c, p, 'down');
    if (q !== null) this.#port.send(q.buf);
  }

  /** Refuses `p`: a TCP RST, or ICMP administratively prohibited. */
  #refuse(p: IpPacket): void {
    if (p.protocol === IP_PROTO.TCP) this.#icmp(tcpReset(p), 'tcp_reset');
    else this.#icmp(icmpUnreachable(p, 'admin'), 'unreachable');
  }

  #icmp(packet: Buffer | null, kind: string): void {
    if (packet === null || this.#port.closed) return;
    ipPipelineMetrics.icmp_sent_total({ endpoint: this.#endpoint, kind }).inc();
    this.#port.send(packet);
  }

  #drop(reason: string): void {
    let c = this.#drops.get(reason);
    if (c === undefined) {
      c = ipPipelineMetrics.packets_dropped_total({ endpoint: this.#endpoint, reason });
      this.#drops.set(reason, c);
    }
    c.inc();
  }

  #flowEnded(flow: IpFlow, reason: FlowEndReason): void {
    const c = flow.data as FlowCtl | null;
    if (c === null) return;
    c.way = 'drop';
    c.reason = 'flow_ended';
    c.pending = null;
    c.session?.close(reason === 'shutdown' ? 'tunnel_closed' : `flow_${reason}`);
    c.session = null;
    ipPipelineMetrics.packets_total({ endpoint: this.#endpoint, direction: 'up' }).inc(flow.packetsUp);
    ipPipelineMetrics.packets_total({ endpoint: this.#endpoint, direction: 'down' }).inc(flow.packetsDown);
    const hook = this.#rt.hooks.ipFlowEnd;
    if (hook === null) return;
    const info = flowEndInfo(c, reason);
    try {
      hook(c.view, info, this.#port.ingress);
    } catch (e) {
      inConnectionContext(this.#port.ingress, () => this.#rt.hookFailed('IpFlowHook.handleFlowEnd', e));
    }
  }
}

/** The largest IP packet (IPv4 total length; an IPv6 payload without jumbograms is close). */
const IP_MAX = 65535;
const UPGRADE: IpFlowDecision = Object.freeze({ kind: 'upgrade' });
const DROP_PROTOCOL: IpFlowDecision = Object.freeze({ kind: 'drop', reason: 'protocol' });

/** A packet that must outlive the read batch it came in. */
function copyPacket(p: IpPacket): IpPacket {
  return { ...p, buf: Buffer.from(p.buf) };
}
