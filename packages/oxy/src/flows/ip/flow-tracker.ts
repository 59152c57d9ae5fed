/**
 * The flow tracker: which IP flow (5-tuple, both directions) each packet belongs to, with TCP
 * state, idle timeouts per state, per-flow packet and byte counts both ways, a bounded table and
 * lifetime events (the seed's "Tracking IP flows"). IPv4 and IPv6; TCP, UDP, ICMP and ICMPv6;
 * other protocols as (protocol, addresses) flows. ICMP echo is keyed by its identifier; an ICMP
 * error is attributed to the flow of the packet it quotes and never creates a flow.
 *
 * Ordering rules:
 * 1. Parse (`parseIp`) and reassemble first; `observe` refuses non-first fragments.
 * 2. `observe` ends an expired flow it finds before starting the new one, so `handleFlowEnd`
 *    of the old flow always fires before `handleFlowStart` of the new one.
 * 3. Call `sweep` periodically (`start()` does, unref'd) to end idle flows; `close()` ends all.
 * 4. When the table is full, a new flow evicts the oldest flow that never got a reply (among
 *    the 64 oldest); if all of those were answered, the new flow is refused (`table_full`), so a
 *    SYN flood cannot push out established flows.
 */

import { ICMP4, ICMP6, isIcmpErrorType, parseIcmp, parseQuoted } from '../../protocols/icmp/icmp.ts';
import { formatAddress } from '../../protocols/ip/address.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';
import { flowKey, keyPorts, reverseFlowKey } from './flow-key.ts';
import { ipFlowMetrics } from './metrics.ts';
import {
  advanceTcp,
  DEFAULT_TCP_TIMEOUTS,
  isReopen,
  type TcpFlowState,
  type TcpTimeouts,
  type TcpTrack,
} from './tcp-state.ts';

/** State of a flow: a TCP state, or for other protocols whether a reply was seen. */
export type FlowState = TcpFlowState | 'unreplied' | 'replied';

/** Why a flow ended (stable metric label values). */
export type FlowEndReason = 'idle' | 'closed' | 'reset' | 'evicted' | 'removed' | 'shutdown';

/** One tracked flow. `up` counts packets from the initiator (the first packet's source). */
export class IpFlow {
  readonly id: number;
  readonly version: 4 | 6;
  readonly protocol: number;
  /** Initiator address bytes (a copy) and port (echo id for ICMP, 0 if none). */
  readonly src: Buffer;
  readonly srcPort: number;
  readonly dst: Buffer;
  readonly dstPort: number;
  /** Key of the initiator's direction; `reverseKey` of the replies. */
  readonly key: string;
  readonly reverseKey: string;
  readonly createdAt: number;
  /** Picked up mid-stream: the first TCP packet was not a SYN. */
  readonly pickedUp: boolean;
  state: FlowState;
  /** Direction of the first TCP FIN (0 none, 1 up, 2 down); see `tcp-state.ts`. */
  firstFin: 0 | 1 | 2 = 0;
  lastSeen: number;
  expiresAt = 0;
  packetsUp = 0;
  bytesUp = 0;
  packetsDown = 0;
  bytesDown = 0;
  /** Whatever the pipeline attaches (its decision, NAT mapping, session); null until then. */
  data: unknown = null;

  constructor(
    id: number,
    p: IpPacket,
    sport: number,
    dport: number,
    key: string,
    reverseKey: string,
    now: number,
    state: FlowState,
  ) {
    this.id = id;
    this.version = p.version;
    this.protocol = p.protocol;
    this.src = Buffer.from(p.buf.subarray(p.srcOffset, p.srcOffset + p.addrLength));
    this.dst = Buffer.from(p.buf.subarray(p.dstOffset, p.dstOffset + p.addrLength));
    this.srcPort = sport;
    this.dstPort = dport;
    this.key = key;
    this.reverseKey = reverseKey;
    this.createdAt = now;
    this.lastSeen = now;
    this.state = state;
    this.pickedUp = p.protocol === IP_PROTO.TCP && state === 'established';
  }

  /** The initiator's address as text. */
  get srcAddress(): string {
    return formatAddress(this.src);
  }

  /** The destination address as text. */
  get dstAddress(): string {
    return formatAddress(this.dst);
  }
}

/** Flow lifetime events; every method optional (an absent one costs nothing). */
export interface FlowTrackerEvents {
  /** A new flow, before its first packet is handled. Fires once per flow. */
  handleFlowStart?(flow: IpFlow): void;
  /** The flow ended; its counters are final. Fires once per flow, after its start. */
  handleFlowEnd?(flow: IpFlow, reason: FlowEndReason): void;
}

/** What `observe` found. */
export type ObserveResult =
  | {
      readonly kind: 'flow';
      readonly flow: IpFlow;
      /** True: from the initiator. */
      readonly up: boolean;
      /** The packet started the flow. */
      readonly isNew: boolean;
      /** An ICMP error about the flow (its state is not changed). */
      readonly related: boolean;
    }
  | { readonly kind: 'untracked'; readonly reason: UntrackedReason };

/** Why a packet was not attached to a flow (stable metric label values). */
export type UntrackedReason =
  | 'fragment'
  | 'truncated'
  | 'table_full'
  | 'tcp_rst_no_flow'
  | 'icmp_error_no_flow';

/** Settings of a tracker. */
export interface FlowTrackerOptions {
  /** Name in metrics (the tunnel endpoint). Default 'ip'. */
  readonly name?: string;
  /** Most flows held. Default 65536. */
  readonly maxFlows?: number;
  /** Idle timeouts per TCP state (ms); missing states keep the defaults. */
  readonly tcpTimeouts?: Partial<TcpTimeouts>;
  /** UDP idle timeout before and after a reply (ms). Default 30 s / 180 s. */
  readonly udpTimeouts?: { readonly unreplied?: number; readonly replied?: number };
  /** ICMP (echo) idle timeout (ms). Default 30 s. */
  readonly icmpTimeout?: number;
  /** Idle timeout of other protocols (ms). Default 600 s. */
  readonly otherTimeout?: number;
  /** Milliseconds clock. Default `Date.now`. */
  readonly now?: () => number;
}

const PROTO_LABEL: Record<number, string> = { 6: 'tcp', 17: 'udp', 1: 'icmp', 58: 'icmpv6' };
const EVICT_SCAN = 64;

/** Tracks the IP flows of one tunnel endpoint. */
export class FlowTracker {
  readonly name: string;
  readonly maxFlows: number;
  readonly #byKey = new Map<string, IpFlow>();
  /** Flows in creation order (the eviction and sweep order). */
  readonly #flows = new Set<IpFlow>();
  readonly #events: FlowTrackerEvents[] = [];
  readonly #tcp: TcpTimeouts;
  readonly #udpUnreplied: number;
  readonly #udpReplied: number;
  readonly #icmp: number;
  readonly #other: number;
  readonly #now: () => number;
  readonly #ports: [number, number] = [0, 0];
  #nextId = 1;
  #timer: NodeJS.Timeout | null = null;

  constructor(opts: FlowTrackerOptions = {}) {
    this.name = opts.name ?? 'ip';
    this.maxFlows = opts.maxFlows ?? 65536;
    this.#tcp = { ...DEFAULT_TCP_TIMEOUTS, ...opts.tcpTimeouts };
    this.#udpUnreplied = opts.udpTimeouts?.unreplied ?? 30_000;
    this.#udpReplied = opts.udpTimeouts?.replied ?? 180_000;
    this.#icmp = opts.icmpTimeout ?? 30_000;
    this.#other = opts.otherTimeout ?? 600_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Flows held now. */
  get size(): number {
    return this.#flows.size;
  }

  /** Adds event handlers; returns a function that removes them. */
  subscribe(events: FlowTrackerEvents): () => void {
    this.#events.push(events);
    return () => {
      const i = this.#events.indexOf(events);
      if (i >= 0) this.#events.splice(i, 1);
    };
  }

  /** The flow a key (either direction) belongs to. */
  get(key: string): IpFlow | undefined {
    return this.#byKey.get(key);
  }

  /** All flows, oldest first. */
  flows(): IterableIterator<IpFlow> {
    return this.#flows.values();
  }

  /** Attaches a packet to its flow (creating it), counting it and advancing the TCP state. */
  observe(p: IpPacket, now = this.#now()): ObserveResult {
    if (p.fragment !== null && p.fragment.offset !== 0) return this.#untracked('fragment');
    const { buf, protocol, version } = p;
    const end = buf.length;
    const isIcmp =
      (protocol === IP_PROTO.ICMP && version === 4) || (protocol === IP_PROTO.ICMPV6 && version === 6);
    const need = protocol === IP_PROTO.TCP ? 14 : protocol === IP_PROTO.UDP || isIcmp ? 8 : 0;
    if (end < p.l4Offset + need) return this.#untracked('truncated');
    if (isIcmp && isIcmpErrorType(version, buf[p.l4Offset]!)) return this.#related(p, now);
    const ports = this.#ports;
    keyPorts(buf, p.l4Offset, end, protocol, version, ports);
    const key = flowKey(buf, p.srcOffset, p.addrLength, protocol, ports[0], ports[1]);
    const tcpFlags = protocol === IP_PROTO.TCP ? buf[p.l4Offset + 13]! : 0;
    let flow = this.#byKey.get(key);
    if (flow !== undefined) {
      const up = flow.key === key;
      if (
        flow.expiresAt <= now ||
        (protocol === IP_PROTO.TCP && isReopen(flow.state as TcpFlowState, tcpFlags, up))
      ) {
        this.#end(flow, flow.expiresAt <= now ? expiredReason(flow) : 'closed');
        flow = undefined;
      } else {
        this.#count(flow, up, end, tcpFlags, now);
        return { kind: 'flow', flow, up, isNew: false, related: false };
      }
    }
    let state: FlowState = 'unreplied';
    if (protocol === IP_PROTO.TCP) {
      if (tcpFlags & 4) return this.#untracked('tcp_rst_no_flow');
      state = (tcpFlags & 0x12) === 2 ? 'syn_sent' : 'established';
    }
    if (this.#flows.size >= this.maxFlows && !this.#evictOne(now)) return this.#untracked('table_full');
    const reverse = reverseFlowKey(buf, p.srcOffset, p.addrLength, protocol, ports[0], ports[1]);
    flow = new IpFlow(this.#nextId++, p, ports[0], ports[1], key, reverse, now, state);
    this.#byKey.set(key, flow);
    this.#byKey.set(reverse, flow);
    this.#flows.add(flow);
    const label = PROTO_LABEL[protocol] ?? 'other';
    ipFlowMetrics.created_total({ tracker: this.name, protocol: label }).inc();
    ipFlowMetrics.active({ tracker: this.name, protocol: label }).inc();
    for (const ev of this.#events) ev.handleFlowStart?.(flow);
    this.#count(flow, true, end, tcpFlags, now);
    return { kind: 'flow', flow, up: true, isNew: true, related: false };
  }

  /** Ends a flow now (the pipeline dropped or finished it). */
  remove(flow: IpFlow, reason: FlowEndReason = 'removed'): void {
    if (this.#flows.has(flow)) this.#end(flow, reason);
  }

  /** Ends every flow idle past its timeout; returns how many. */
  sweep(now = this.#now()): number {
    let n = 0;
    for (const flow of this.#flows) {
      if (flow.expiresAt <= now) {
        this.#end(flow, expiredReason(flow));
        n++;
      }
    }
    return n;
  }

  /** Sweeps every `intervalMs` on an unref'd timer. */
  start(intervalMs = 1000): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.sweep(), intervalMs);
    this.#timer.unref();
  }

  /** Stops sweeping and ends every flow (`shutdown`). */
  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    for (const flow of this.#flows) this.#end(flow, 'shutdown');
  }

  #count(flow: IpFlow, up: boolean, bytes: number, tcpFlags: number, now: number): void {
    if (up) {
      flow.packetsUp++;
      flow.bytesUp += bytes;
    } else {
      flow.packetsDown++;
      flow.bytesDown += bytes;
    }
    flow.lastSeen = now;
    let timeout: number;
    if (flow.protocol === IP_PROTO.TCP) {
      advanceTcp(flow as TcpTrack, tcpFlags, up);
      timeout = this.#tcp[flow.state as TcpFlowState];
    } else {
      if (!up) flow.state = 'replied';
      const isIcmp = flow.protocol === IP_PROTO.ICMP || flow.protocol === IP_PROTO.ICMPV6;
      timeout = isIcmp
        ? this.#icmp
        : flow.protocol === IP_PROTO.UDP
          ? flow.state === 'replied'
            ? this.#udpReplied
            : this.#udpUnreplied
          : this.#other;
    }
    flow.expiresAt = now + timeout;
  }

  /** An ICMP error: attributed to the flow of the packet it quotes, never a new flow. */
  #related(p: IpPacket, now: number): ObserveResult {
    let flow: IpFlow | undefined;
    let quotedKey = '';
    try {
      const q = parseQuoted(p, parseIcmp(p));
      const ip = q.ip;
      let sport = Math.max(q.srcPort, 0);
      let dport = Math.max(q.dstPort, 0);
      if (ip.protocol === IP_PROTO.ICMP || ip.protocol === IP_PROTO.ICMPV6) {
        // parseQuoted gives (id, type): rebuild the echo key (id, 0) or (0, id).
        const request = dport === (ip.version === 4 ? ICMP4.ECHO_REQUEST : ICMP6.ECHO_REQUEST);
        const reply = dport === (ip.version === 4 ? ICMP4.ECHO_REPLY : ICMP6.ECHO_REPLY);
        [sport, dport] = request ? [sport, 0] : reply ? [0, sport] : [0, 0];
      }
      quotedKey = flowKey(ip.buf, ip.srcOffset, ip.addrLength, ip.protocol, sport, dport);
      flow = this.#byKey.get(quotedKey);
    } catch {
      flow = undefined; // Boundary: an error quoting junk belongs to no flow.
    }
    if (flow === undefined || flow.expiresAt <= now) return this.#untracked('icmp_error_no_flow');
    // The error travels against the quoted packet: a quoted "up" packet means the error goes down.
    const up = flow.key !== quotedKey;
    if (up) {
      flow.packetsUp++;
      flow.bytesUp += p.buf.length;
    } else {
      flow.packetsDown++;
      flow.bytesDown += p.buf.length;
    }
    return { kind: 'flow', flow, up, isNew: false, related: true };
  }

  #evictOne(now: number): boolean {
    let i = 0;
    for (const flow of this.#flows) {
      if (i++ >= EVICT_SCAN) break;
      if (flow.expiresAt <= now) {
        this.#end(flow, expiredReason(flow));
        return true;
      }
      if (flow.packetsDown === 0 || flow.state === 'closed' || flow.state === 'time_wait') {
        this.#end(flow, 'evicted');
        return true;
      }
    }
    return false;
  }

  #end(flow: IpFlow, reason: FlowEndReason): void {
    this.#flows.delete(flow);
    this.#byKey.delete(flow.key);
    this.#byKey.delete(flow.reverseKey);
    const label = PROTO_LABEL[flow.protocol] ?? 'other';
    ipFlowMetrics.active({ tracker: this.name, protocol: label }).dec();
    ipFlowMetrics.ended_total({ tracker: this.name, reason }).inc();
    ipFlowMetrics.bytes_total({ tracker: this.name, direction: 'up' }).inc(flow.bytesUp);
    ipFlowMetrics.bytes_total({ tracker: this.name, direction: 'down' }).inc(flow.bytesDown);
    for (const ev of this.#events) ev.handleFlowEnd?.(flow, reason);
  }

  #untracked(reason: UntrackedReason): ObserveResult {
    ipFlowMetrics.packets_untracked_total({ tracker: this.name, reason }).inc();
    return { kind: 'untracked', reason };
  }
}

/** The end reason of a flow that timed out: a reset or a finished close, else idle. */
function expiredReason(flow: IpFlow): FlowEndReason {
  return flow.state === 'closed' ? 'reset' : flow.state === 'time_wait' ? 'closed' : 'idle';
}
