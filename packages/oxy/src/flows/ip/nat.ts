/**
 * The userspace NAT of the IP→TCP upgrade (the seed's "From an IP flow to a TCP stream"):
 * every upgraded flow claims a slot, a (pool address, port) pair, and its packets are rewritten
 * from (client, destination) to (slot, the namespace listener) on the way into the TUN device,
 * and back on the way out, so every destination lands on one listener. An accepted socket's
 * remote address and port are the slot, which `originalDestination` maps back to the flow.
 *
 * Rewrites are in place with incremental checksum updates (RFC 1624): the IPv4 header, and the
 * TCP or UDP checksum over the pseudo-header and ports. ICMP errors the namespace kernel sends
 * about a slot are translated too (outer and quoted headers), so a client's TCP sees them.
 *
 * Ordering rules:
 * 1. `map` on the flow's first packet (after the decision to upgrade), then `rewriteOutbound`
 *    for each client packet and `rewriteInbound` for each packet read from the TUN device.
 * 2. A mapping lives as long as its flow: `attach(tracker)` releases it at the flow's end;
 *    `expire` (run by `start`) is the safety net for mappings idle past `idleTimeoutMs`.
 * 3. Slots are handed out by a rotating cursor, so a released slot is reused only after the
 *    whole pool went round, clear of the namespace kernel's TIME_WAIT for the same 4-tuple.
 */
import { unmappedIp } from '../../context/addr.ts';
import { addressBytes, formatAddress, parseCidr } from '../../protocols/ip/address.ts';
import { sumWords, updateChecksumSums } from '../../protocols/ip/checksum.ts';
import { l4ChecksumField } from '../../protocols/ip/l4-checksum.ts';
import { IP_PROTO, type IpPacket } from '../../protocols/ip/packet.ts';
import { clampMss } from '../../protocols/tcp/header.ts';
import { packetFlowKey } from './flow-key.ts';
import type { FlowTracker } from './flow-tracker.ts';
import { ipNatMetrics } from './metrics.ts';
import { translateIcmpError } from './nat-icmp.ts';

/** An address and port. */
export interface NatEndpoint {
  readonly address: string;
  readonly port: number;
}

/** One family's side of the NAT: the slot pool and the listener every flow is sent to. */
export interface NatFamilyOptions {
  /** CIDR of slot addresses, routed into the TUN device in the namespace (e.g. 100.64.0.0/10). */
  readonly pool: string;
  /** The namespace listener's address and port. */
  readonly listener: NatEndpoint;
}

/** Settings of an `UpgradeNat`. */
export interface UpgradeNatOptions {
  /** Name in metrics. Default 'upgrade'. */
  readonly name?: string;
  readonly v4?: NatFamilyOptions;
  readonly v6?: NatFamilyOptions;
  /** Slot ports, inclusive. Default [1024, 65535]. */
  readonly ports?: readonly [number, number];
  /** Most mappings held. Default 65536. */
  readonly maxMappings?: number;
  /** Mappings idle this long are released by `expire` (ms). Default 2 h 10 min. */
  readonly idleTimeoutMs?: number;
  /** Clamp the MSS of SYNs going into the namespace to this (e.g. tunnel MTU − 40/60). */
  readonly clampMss?: number;
  /** Milliseconds clock. Default `Date.now`. */
  readonly now?: () => number;
}

/** A flow's claim on a slot. Addresses are bytes of the flow's IP version. */
export class NatMapping {
  readonly version: 4 | 6;
  readonly protocol: number;
  /** The flow key of the client's direction (as the tracker computes it). */
  readonly flowKey: string;
  readonly clientAddr: Buffer;
  readonly clientPort: number;
  readonly originalDstAddr: Buffer;
  readonly originalDstPort: number;
  readonly slotAddr: Buffer;
  readonly slotPort: number;
  lastUsed: number;
  /** Whatever the pipeline attaches (the stream session); null until then. */
  data: unknown = null;

  constructor(p: IpPacket, flowKey: string, slotAddr: Buffer, slotPort: number, now: number) {
    this.version = p.version;
    this.protocol = p.protocol;
    this.flowKey = flowKey;
    this.clientAddr = Buffer.from(p.buf.subarray(p.srcOffset, p.srcOffset + p.addrLength));
    this.originalDstAddr = Buffer.from(p.buf.subarray(p.dstOffset, p.dstOffset + p.addrLength));
    this.clientPort = p.buf.readUInt16BE(p.l4Offset);
    this.originalDstPort = p.buf.readUInt16BE(p.l4Offset + 2);
    this.slotAddr = slotAddr;
    this.slotPort = slotPort;
    this.lastUsed = now;
  }

  /** The original destination as text and port (where the upgraded stream must go). */
  get originalDestination(): NatEndpoint {
    return { address: formatAddress(this.originalDstAddr), port: this.originalDstPort };
  }

  /** The client as text and port. */
  get client(): NatEndpoint {
    return { address: formatAddress(this.clientAddr), port: this.clientPort };
  }
}

interface Family {
  readonly base: Buffer;
  readonly hosts: number;
  readonly listenerAddr: Buffer;
  readonly listenerPort: number;
  cursor: number;
}

/** Why `map` refused a flow (stable metric label values). */
export type NatRefusal = 'no_family' | 'not_tcp_udp' | 'pool_exhausted' | 'table_full';

const PROBES = 64;

/** The NAT table of one upgrade namespace. */
export class UpgradeNat {
  readonly name: string;
  readonly #families: { 4: Family | null; 6: Family | null };
  readonly #byFlow = new Map<string, NatMapping>();
  readonly #bySlot = new Map<string, NatMapping>();
  readonly #minPort: number;
  readonly #portCount: number;
  readonly #max: number;
  readonly #idle: number;
  readonly #mss: number;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;

  constructor(opts: UpgradeNatOptions) {
    this.name = opts.name ?? 'upgrade';
    this.#families = { 4: opts.v4 ? family(opts.v4) : null, 6: opts.v6 ? family(opts.v6) : null };
    const [lo, hi] = opts.ports ?? [1024, 65535];
    this.#minPort = lo;
    this.#portCount = hi - lo + 1;
    this.#max = opts.maxMappings ?? 65536;
    this.#idle = opts.idleTimeoutMs ?? 7_800_000;
    this.#mss = opts.clampMss ?? 0;
    this.#now = opts.now ?? Date.now;
  }

  /** Mappings held now. */
  get size(): number {
    return this.#byFlow.size;
  }

  /** The listener of an IP version (where the namespace side must listen), or null. */
  listener(version: 4 | 6): NatEndpoint | null {
    const f = this.#families[version];
    return f && { address: formatAddress(f.listenerAddr), port: f.listenerPort };
  }

  /**
   * Claims a slot for the flow of `p` (its first packet, client → destination; TCP or UDP).
   * Returns the existing mapping if the flow has one, or a refusal reason. `scope` (default
   * none) is prefixed to the flow key, so that equal 5-tuples of different tunnels get
   * different mappings; a scoped mapping is found with `get(scope + packetFlowKey(p))`, and
   * the caller rewrites its client packets itself (`rewrite`), since `rewriteOutbound` and
   * `attach` know unscoped keys only.
   */
  map(p: IpPacket, now = this.#now(), scope = ''): NatMapping | NatRefusal {
    const key = scope + packetFlowKey(p);
    const had = this.#byFlow.get(key);
    if (had) return had;
    const refuse = (why: NatRefusal) => {
      ipNatMetrics.mappings_refused_total({ nat: this.name, reason: why }).inc();
      return why;
    };
    const f = this.#families[p.version];
    if (f === null) return refuse('no_family');
    if (!transportFits(p)) return refuse('not_tcp_udp');
    if (this.#byFlow.size >= this.#max) return refuse('table_full');
    const slots = f.hosts * this.#portCount;
    for (let i = 0; i < PROBES; i++) {
      const slot = f.cursor;
      f.cursor = (f.cursor + 1) % slots;
      const addr = Buffer.from(f.base);
      addToAddress(addr, 1 + Math.floor(slot / this.#portCount));
      const port = this.#minPort + (slot % this.#portCount);
      if (addr.equals(f.listenerAddr)) continue;
      const slotKey = slotKeyOf(addr, port);
      if (this.#bySlot.has(slotKey)) continue;
      const m = new NatMapping(p, key, addr, port, now);
      this.#byFlow.set(key, m);
      this.#bySlot.set(slotKey, m);
      ipNatMetrics.mappings_total({ nat: this.name }).inc();
      ipNatMetrics.mappings_active({ nat: this.name }).inc();
      return m;
    }
    return refuse('pool_exhausted');
  }

  /** The mapping of a flow (by the tracker's `flow.key`). */
  get(flowKey: string): NatMapping | undefined {
    return this.#byFlow.get(flowKey);
  }

  /**
   * The mapping of an accepted socket, from its remote address and port (the slot); what the
   * stream runner asks to learn the original destination. IPv4-mapped IPv6 text is accepted.
   */
  originalDestination(remoteAddress: string, remotePort: number): NatMapping | undefined {
    let bytes: Buffer;
    try {
      bytes = addressBytes(unmappedIp(remoteAddress));
    } catch {
      return undefined; // Boundary: not an address, so not one of ours.
    }
    return this.#bySlot.get(slotKeyOf(bytes, remotePort));
  }

  /**
   * Rewrites a client packet of a mapped flow for the TUN device: (client, destination) →
   * (slot, listener), checksums fixed, MSS clamped. Returns the mapping, or null if the packet's
   * flow has none (left untouched).
   */
  rewriteOutbound(p: IpPacket, now = this.#now()): NatMapping | null {
    if (!transportFits(p)) return null;
    const m = this.#byFlow.get(packetFlowKey(p));
    if (m === undefined) return null;
    const f = this.#families[m.version]!;
    rewrite(p, m.slotAddr, m.slotPort, f.listenerAddr, f.listenerPort);
    if (this.#mss > 0 && p.protocol === IP_PROTO.TCP) clampMss(p, this.#mss);
    m.lastUsed = now;
    return m;
  }

  /**
   * Rewrites a packet read from the TUN device back for the client: (listener, slot) →
   * (destination, client); ICMP errors about a slot are translated inside and out. Returns
   * the mapping, or null if the packet is not for a slot (left untouched: drop it).
   */
  rewriteInbound(p: IpPacket, now = this.#now()): NatMapping | null {
    const icmp = p.version === 4 ? IP_PROTO.ICMP : IP_PROTO.ICMPV6;
    if (p.protocol === icmp) {
      const m = translateIcmpError(p, (addr, port) => this.#bySlot.get(slotKeyOf(addr, port)));
      if (m) m.lastUsed = now;
      return m;
    }
    if (!transportFits(p)) return null;
    const m = this.#bySlot.get(
      slotKeyOf(p.buf.subarray(p.dstOffset, p.dstOffset + p.addrLength), p.buf.readUInt16BE(p.l4Offset + 2)),
    );
    if (m === undefined || m.protocol !== p.protocol) return null;
    rewrite(p, m.originalDstAddr, m.originalDstPort, m.clientAddr, m.clientPort);
    m.lastUsed = now;
    return m;
  }

  /** Frees a mapping's slot. */
  release(m: NatMapping): void {
    if (this.#byFlow.get(m.flowKey) !== m) return;
    this.#byFlow.delete(m.flowKey);
    this.#bySlot.delete(slotKeyOf(m.slotAddr, m.slotPort));
    ipNatMetrics.mappings_active({ nat: this.name }).dec();
  }

  /** Releases mappings when their flows end in `tracker`; returns the unsubscribe function. */
  attach(tracker: FlowTracker): () => void {
    return tracker.subscribe({
      handleFlowEnd: (flow) => {
        const m = this.#byFlow.get(flow.key);
        if (m) this.release(m);
      },
    });
  }

  /** Releases mappings idle past the timeout; returns how many. */
  expire(now = this.#now()): number {
    let n = 0;
    for (const m of this.#byFlow.values()) {
      if (now - m.lastUsed >= this.#idle) {
        this.release(m);
        n++;
      }
    }
    return n;
  }

  /** Runs `expire` every `intervalMs` on an unref'd timer. */
  start(intervalMs = 10_000): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.expire(), intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and releases every mapping. */
  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    for (const m of [...this.#byFlow.values()]) this.release(m);
  }
}

/** Whether `p` is TCP or UDP with its whole fixed header present (the rewrite touches both ends). */
function transportFits(p: IpPacket): boolean {
  if (p.protocol === IP_PROTO.TCP) return p.buf.length >= p.l4Offset + 20;
  return p.protocol === IP_PROTO.UDP && p.buf.length >= p.l4Offset + 8;
}

function family(o: NatFamilyOptions): Family {
  const cidr = parseCidr(o.pool);
  const hostBits = cidr.bytes.length * 8 - cidr.prefix;
  // Skip the network and (IPv4) broadcast addresses; at most 2^24 slot addresses.
  const hosts = Math.max(0, Math.min(2 ** Math.min(hostBits, 30) - 2, 1 << 24));
  if (hosts < 1) throw new TypeError(`NAT pool ${o.pool} has no host addresses`);
  return {
    base: cidr.bytes,
    hosts,
    listenerAddr: addressBytes(o.listener.address),
    listenerPort: o.listener.port,
    cursor: 0,
  };
}

/** Adds `n` (< 2^31) to the address in `addr`, in place. */
function addToAddress(addr: Buffer, n: number): void {
  let carry = n;
  for (let i = addr.length - 1; i >= 0 && carry > 0; i--) {
    const v = addr[i]! + (carry & 0xff);
    addr[i] = v & 0xff;
    carry = Math.floor(carry / 256) + (v >> 8);
  }
}

function slotKeyOf(addr: Uint8Array, port: number): string {
  return (
    Buffer.from(addr.buffer, addr.byteOffset, addr.byteLength).toString('latin1') + String.fromCharCode(port)
  );
}

/** Rewrites source and destination of a TCP/UDP packet in place, fixing the checksums. */
export function rewrite(p: IpPacket, src: Buffer, sport: number, dst: Buffer, dport: number): void {
  const b = p.buf;
  const n = p.addrLength;
  const a0 = p.srcOffset;
  const a1 = a0 + 2 * n; // source and destination are adjacent
  const l4 = p.l4Offset;
  // Sum the rewritten words before and after, in place (no copies of the old bytes).
  const oldAddrSum = sumWords(b, a0, a1);
  const oldPortSum = b.readUInt16BE(l4) + b.readUInt16BE(l4 + 2);
  src.copy(b, a0);
  dst.copy(b, p.dstOffset);
  b.writeUInt16BE(sport, l4);
  b.writeUInt16BE(dport, l4 + 2);
  const addrSum = sumWords(b, a0, a1);
  if (p.version === 4) b.writeUInt16BE(updateChecksumSums(b.readUInt16BE(10), n, oldAddrSum, addrSum), 10);
  const field = l4 + l4ChecksumField(p.protocol);
  const old = b.readUInt16BE(field);
  if (p.protocol === IP_PROTO.UDP && old === 0 && p.version === 4) return; // no checksum
  let sum = updateChecksumSums(old, n + 2, oldAddrSum + oldPortSum, addrSum + sport + dport);
  if (sum === 0 && p.protocol === IP_PROTO.UDP) sum = 0xffff;
  b.writeUInt16BE(sum, field);
}
