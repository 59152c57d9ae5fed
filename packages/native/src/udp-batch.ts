/**
 * `UdpBatch`: the datagrams one recvmmsg call read, as the addon hands them over: the payloads
 * in a scratch area shared by every socket of this thread, and 8 int32 of metadata per
 * datagram (offset, length, port, family, the address in four host-order words; see
 * src/udp.c). Nothing is allocated per datagram unless asked for: `payload(i)` is a view,
 * `address(i)` formats a string, `peerKey(i)` is a number for IPv4 (a map key without a string).
 *
 * Ordering rule: a batch is valid only during the callback it is passed to. The next batch, of
 * this socket or any other, overwrites the scratch area: `copy(i)` what you keep.
 */

/** Int32s of metadata per datagram. */
export const META_INTS = 8;
/** Most datagrams per recvmmsg call. */
export const MAX_BATCH = 64;
/** Largest datagram a socket can be asked to read. */
export const MAX_DATAGRAM = 65535;
/** Bytes per datagram slot in the scratch area (the addon rounds a slot up to 64 bytes). */
const SLOT = 65536;

let scratch: ArrayBuffer | null = null;
let scratchBytes: Buffer | null = null;
let meta: Int32Array | null = null;

/** The thread's scratch area and metadata array, made on first use (64 slots of 64 KiB, untouched pages cost nothing). */
export function sharedScratch(): { scratch: ArrayBuffer; bytes: Buffer; meta: Int32Array } {
  if (scratch === null || scratchBytes === null || meta === null) {
    scratch = new ArrayBuffer(MAX_BATCH * SLOT);
    scratchBytes = Buffer.from(scratch);
    meta = new Int32Array(MAX_BATCH * META_INTS);
  }
  return { scratch, bytes: scratchBytes, meta };
}

/**
 * Formats four host-order words as an IPv6 address the way Node does (`net.SocketAddress`,
 * libuv's inet_ntop): lower case, the first longest run of two or more zero groups as `::`,
 * v4-mapped (`::ffff:1.2.3.4`) and v4-compatible (`::1.2.3.4`) addresses dotted.
 */
export function formatIpv6(w0: number, w1: number, w2: number, w3: number): string {
  if (w0 === 0 && w1 === 0 && w2 >>> 0 === 0xffff) return `::ffff:${formatIpv4(w3)}`;
  if (w0 === 0 && w1 === 0 && w2 === 0 && w3 >>> 16 !== 0) return `::${formatIpv4(w3)}`;
  const groups = [
    w0 >>> 16,
    w0 & 0xffff,
    w1 >>> 16,
    w1 & 0xffff,
    w2 >>> 16,
    w2 & 0xffff,
    w3 >>> 16,
    w3 & 0xffff,
  ];
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not shortened
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string =>
    groups
      .slice(from, to)
      .map((g) => g.toString(16))
      .join(':');
  if (bestAt < 0) return hex(0, 8);
  return `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}

/** Formats a host-order word as a dotted IPv4 address. */
export function formatIpv4(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** The datagrams of one receive call; valid only during the callback (see the module comment). */
export class UdpBatch {
  /** How many datagrams this batch holds. */
  count = 0;
  /** The scratch area; datagram i is `data[offset(i) .. offset(i) + length(i)]`. */
  readonly data: Buffer;
  /** The metadata, 8 int32 per datagram: offset, length, port, family, four address words. */
  readonly meta: Int32Array;

  constructor(data: Buffer, meta: Int32Array) {
    this.data = data;
    this.meta = meta;
  }

  /** Where datagram i starts in `data`. */
  offset(i: number): number {
    return this.meta[i * META_INTS] as number;
  }

  /** Datagram i's length in bytes. */
  length(i: number): number {
    return this.meta[i * META_INTS + 1] as number;
  }

  /** A view of datagram i (no copy; valid during the callback only). */
  payload(i: number): Buffer {
    const at = this.meta[i * META_INTS] as number;
    return this.data.subarray(at, at + (this.meta[i * META_INTS + 1] as number));
  }

  /** A copy of datagram i that outlives the callback. */
  copy(i: number): Buffer {
    return Buffer.from(this.payload(i));
  }

  /** The sender's port (0 on a connected socket: the peer is the socket's). */
  port(i: number): number {
    return this.meta[i * META_INTS + 2] as number;
  }

  /** The sender's family: 4, 6 (v4-mapped senders on a dual-stack socket too), or 0 on a connected socket. */
  family(i: number): 0 | 4 | 6 {
    return this.meta[i * META_INTS + 3] as 0 | 4 | 6;
  }

  /** The sender's address as text (`""` on a connected socket). */
  address(i: number): string {
    const m = i * META_INTS;
    const family = this.meta[m + 3];
    if (family === 4) return formatIpv4(this.meta[m + 4] as number);
    if (family !== 6) return '';
    const w = this.meta;
    return formatIpv6(w[m + 4] as number, w[m + 5] as number, w[m + 6] as number, w[m + 7] as number);
  }

  /**
   * A key for the sender's address and port, equal for equal senders: a number for IPv4
   * (address × 65536 + port, no allocation), a string for IPv6.
   */
  peerKey(i: number): number | string {
    const m = i * META_INTS;
    if (this.meta[m + 3] === 4)
      return ((this.meta[m + 4] as number) >>> 0) * 65536 + (this.meta[m + 2] as number);
    return `[${this.address(i)}]:${this.port(i)}`;
  }
}
