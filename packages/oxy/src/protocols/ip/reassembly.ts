/**
 * IP fragment reassembly within bounds (RFC 791 §3.2, RFC 8200 §4.5, RFC 5722), or drop,
 * counted by reason.
 *
 * Fragments are keyed by (source, destination, protocol, id) for IPv4 and (source, destination,
 * id) for IPv6. Bounds: the reassembled size (65535), fragments per datagram, datagrams pending,
 * total bytes held (the oldest pending datagram is evicted to make room), and a timeout after
 * the first fragment. Any overlap drops the whole datagram, for both versions (RFC 5722 for
 * IPv6; for IPv4 it defeats the overlapping-fragment attacks of RFC 1858), and later fragments
 * of that datagram are dropped until its timeout; an exact duplicate is ignored (RFC 8200 §4.5).
 *
 * Ordering rule: reassemble before reading ports (the flow tracker and NAT need the upper-layer
 * header, which only the first fragment carries), and call `expire` periodically (also done on
 * every `push`).
 */
import { ipFragmentMetrics } from '../../flows/ip/metrics.ts';
import { internetChecksum } from './checksum.ts';
import { type IpPacket, parseIp } from './packet.ts';

/** Bounds of a `Reassembler`. */
export interface ReassemblyOptions {
  /** Name in metrics (the tunnel endpoint). Default 'ip'. */
  readonly name?: string;
  /** Largest reassembled payload, in bytes. Default 65535. */
  readonly maxPacketBytes?: number;
  /** Fragment bytes held in all, before the oldest pending datagram is evicted. Default 4 MiB. */
  readonly maxTotalBytes?: number;
  /** Datagrams being reassembled at once. Default 1024. */
  readonly maxPending?: number;
  /** Fragments of one datagram. Default 64. */
  readonly maxFragments?: number;
  /** Time from the first fragment to give up, in ms. Default 30 000. */
  readonly timeoutMs?: number;
  /**
   * Called when a datagram times out and its first fragment had arrived: the caller may send
   * ICMP time exceeded (code 1, `icmpTimeExceeded(first, 1)`).
   */
  readonly onTimeout?: (first: IpPacket) => void;
}

/** Why fragments were dropped (stable metric label values). */
export type ReassemblyDropReason =
  | 'timeout'
  | 'overlap'
  | 'too_big'
  | 'too_many_fragments'
  | 'over_limit'
  | 'inconsistent';

/** Counters of a `Reassembler`. */
export interface ReassemblyStats {
  reassembled: number;
  duplicates: number;
  /** Fragments dropped, by reason. */
  readonly dropped: Record<ReassemblyDropReason, number>;
}

interface Part {
  readonly offset: number;
  readonly data: Buffer;
}

interface Pending {
  readonly created: number;
  parts: Part[];
  bytes: number;
  /** Payload length, known once the last fragment (more = false) arrived; -1 before. */
  total: number;
  first: IpPacket | null;
  /** A dropped datagram kept until its timeout so its late fragments are dropped too. */
  dead: boolean;
}

/** Reassembles fragments of IPv4 and IPv6 packets. */
export class Reassembler {
  readonly stats: ReassemblyStats = {
    reassembled: 0,
    duplicates: 0,
    dropped: { timeout: 0, overlap: 0, too_big: 0, too_many_fragments: 0, over_limit: 0, inconsistent: 0 },
  };
  readonly #maxPacket: number;
  readonly #maxTotal: number;
  readonly #maxPending: number;
  readonly #maxFragments: number;
  readonly #timeout: number;
  readonly #onTimeout: ((first: IpPacket) => void) | undefined;
  readonly #name: string;
  readonly #pending = new Map<string, Pending>();
  #held = 0;

  constructor(opts: ReassemblyOptions = {}) {
    this.#maxPacket = opts.maxPacketBytes ?? 65535;
    this.#maxTotal = opts.maxTotalBytes ?? 4 * 1024 * 1024;
    this.#maxPending = opts.maxPending ?? 1024;
    this.#maxFragments = opts.maxFragments ?? 64;
    this.#timeout = opts.timeoutMs ?? 30_000;
    this.#onTimeout = opts.onTimeout;
    this.#name = opts.name ?? 'ip';
  }

  /** Bytes of fragment data held now. */
  get heldBytes(): number {
    return this.#held;
  }

  /** Datagrams pending (including dropped ones remembered until their timeout). */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * Adds a fragment. Returns the reassembled packet once complete, `p` itself if it is not a
   * fragment, and null while waiting or when the fragment was dropped (counted in `stats`).
   */
  push(p: IpPacket, now = Date.now()): IpPacket | null {
    if (p.fragment === null) return p;
    this.expire(now);
    const f = p.fragment;
    const dataStart = p.version === 4 ? p.l4Offset : p.fragmentHeaderOffset + 8;
    const data = p.buf.subarray(dataStart);
    const key = keyOf(p);
    let e = this.#pending.get(key);
    if (e?.dead) return this.#drop(null, '', 'overlap', 1);
    if (f.offset + data.length > this.#maxPacket) return this.#drop(e ?? null, key, 'too_big', 1);
    if (e === undefined) {
      while (this.#pending.size >= this.#maxPending) this.#evictOldest();
      e = { created: now, parts: [], bytes: 0, total: -1, first: null, dead: false };
      this.#pending.set(key, e);
    }
    const end = f.offset + data.length;
    if (!f.more) {
      if ((e.total >= 0 && e.total !== end) || e.parts.some((x) => x.offset + x.data.length > end))
        return this.#drop(e, key, 'inconsistent', 1);
      e.total = end;
    } else if ((e.total >= 0 && end > e.total) || data.length === 0) {
      return this.#drop(e, key, 'inconsistent', 1);
    }
    for (const x of e.parts) {
      if (x.offset < end && f.offset < x.offset + x.data.length) {
        if (x.offset === f.offset && x.data.length === data.length) {
          this.stats.duplicates++;
          return null;
        }
        return this.#drop(e, key, 'overlap', 1);
      }
    }
    if (e.parts.length >= this.#maxFragments) return this.#drop(e, key, 'too_many_fragments', 1);
    // Copy: the caller's buffer (a read batch) may be reused before the datagram completes.
    const part = { offset: f.offset, data: Buffer.from(data) };
    while (this.#held + part.data.length > this.#maxTotal && this.#evictOldest(key));
    if (this.#held + part.data.length > this.#maxTotal) return this.#drop(e, key, 'over_limit', 1);
    e.parts.push(part);
    e.bytes += part.data.length;
    this.#held += part.data.length;
    if (f.offset === 0) e.first = parseIp(Buffer.from(p.buf));
    if (e.total < 0 || e.bytes !== e.total || e.first === null) return null;
    this.#pending.delete(key);
    this.#held -= e.bytes;
    this.stats.reassembled++;
    ipFragmentMetrics.reassembled_total({ reassembler: this.#name }).inc();
    return assemble(e.first, e.parts, e.total);
  }

  /** Drops datagrams older than the timeout; returns how many. */
  expire(now = Date.now()): number {
    let n = 0;
    for (const [key, e] of this.#pending) {
      if (now - e.created < this.#timeout) break; // insertion order is creation order
      this.#pending.delete(key);
      if (!e.dead) {
        this.#held -= e.bytes;
        this.#count('timeout', e.parts.length);
        if (e.first !== null && this.#onTimeout) this.#onTimeout(e.first);
      }
      n++;
    }
    return n;
  }

  /** Evicts the oldest pending datagram (not `keep`); false if there is none. */
  #evictOldest(keep?: string): boolean {
    for (const [key, e] of this.#pending) {
      if (key === keep) continue;
      this.#pending.delete(key);
      this.#held -= e.dead ? 0 : e.bytes;
      if (!e.dead) this.#count('over_limit', e.parts.length);
      return true;
    }
    return false;
  }

  #count(reason: ReassemblyDropReason, n: number): void {
    if (n === 0) return;
    this.stats.dropped[reason] += n;
    ipFragmentMetrics.dropped_total({ reassembler: this.#name, reason }).inc(n);
  }

  #drop(e: Pending | null, _key: string, reason: ReassemblyDropReason, count: number): null {
    this.#count(reason, count);
    if (e !== null && !e.dead) {
      // The whole datagram goes; remember it (without its bytes) so late fragments go too.
      this.#count(reason, e.parts.length);
      this.#held -= e.bytes;
      e.parts = [];
      e.bytes = 0;
      e.first = null;
      e.dead = true;
    }
    return null;
  }
}

function keyOf(p: IpPacket): string {
  const b = p.buf;
  const addrs = b.toString('latin1', p.srcOffset, p.dstOffset + p.addrLength); // src and dst are adjacent
  return p.version === 4 ? `4${addrs}${p.protocol}:${p.fragment!.id}` : `6${addrs}:${p.fragment!.id}`;
}

function assemble(first: IpPacket, parts: Part[], total: number): IpPacket {
  parts.sort((a, b) => a.offset - b.offset);
  const fb = first.buf;
  const headLen = first.version === 4 ? first.l4Offset : first.fragmentHeaderOffset;
  const out = Buffer.alloc(headLen + total);
  fb.copy(out, 0, 0, headLen);
  for (const x of parts) x.data.copy(out, headLen + x.offset);
  if (first.version === 4) {
    out.writeUInt16BE(out.length, 2);
    out.writeUInt16BE(fb.readUInt16BE(6) & 0x4000, 6); // keep DF, clear MF and the offset
    out.writeUInt16BE(0, 10);
    out.writeUInt16BE(internetChecksum(out, 0, headLen), 10);
  } else {
    out[first.fragmentNextHeaderField] = fb[first.fragmentHeaderOffset]!;
    out.writeUInt16BE(out.length - 40, 4);
  }
  return parseIp(out);
}
