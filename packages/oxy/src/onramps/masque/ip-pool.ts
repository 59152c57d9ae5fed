/**
 * The address pool of CONNECT-IP tunnels (RFC 9484 §4.7): `masque.ip_pool.ipv4` and `.ipv6`
 * of an `http` endpoint, each a prefix from which every tunnel gets one address (a /32 and a
 * /128) for as long as it lives. The first address after the network address of each prefix is
 * the gateway, the proxy's own end of every tunnel (the address ping answers from); an IPv4
 * prefix also keeps its network and broadcast addresses out of the pool.
 *
 * Ordering rules: one pool per endpoint, made when the endpoint's MASQUE on-ramp is (a bad
 * prefix is a start-up error naming its key); a tunnel leases before it answers 2xx and
 * releases exactly once when it ends, however it ends. A lease takes one address of every
 * configured family or none (null: exhausted, the request gets 503).
 */

import { OXY_ERR, OxyError } from '../../errors.ts';
import { formatIp } from '../../protocols/capsule/ip-address.ts';
import { type Cidr, parseCidr } from '../../protocols/ip/address.ts';

/** The addresses of one tunnel; `release` returns them (a second call does nothing). */
export interface IpLease {
  readonly v4: string | null;
  readonly v6: string | null;
  release(): void;
}

/** The gateway address of each configured family. */
export interface IpGateways {
  readonly v4: string | null;
  readonly v6: string | null;
}

const toBig = (b: Uint8Array): bigint => b.reduce((n, x) => (n << 8n) | BigInt(x), 0n);
function fromBig(n: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--, n >>= 8n) out[i] = Number(n & 0xffn);
  return out;
}

/** One family's prefix: offsets `first..last` from the network address are leased. */
class FamilyPool {
  readonly gateway: string;
  readonly #base: bigint;
  readonly #length: number;
  readonly #first: bigint;
  readonly #last: bigint;
  readonly #used = new Set<bigint>();
  #cursor: bigint;

  constructor(cidr: Cidr, where: string) {
    const bits = cidr.bytes.length * 8;
    const hostBits = BigInt(bits - cidr.prefix);
    this.#length = cidr.bytes.length;
    this.#base = (toBig(cidr.bytes) >> hostBits) << hostBits;
    const size = 1n << hostBits;
    this.#first = 2n;
    // IPv4 keeps the broadcast address out; IPv6 has none.
    this.#last = this.#length === 4 ? size - 2n : size - 1n;
    if (this.#last < this.#first) {
      throw new OxyError(OXY_ERR.INVALID_APP, `${where}: the prefix leaves no address after the gateway`);
    }
    this.gateway = formatIp(fromBig(this.#base + 1n, this.#length));
    this.#cursor = this.#first;
  }

  get used(): number {
    return this.#used.size;
  }

  take(): bigint | null {
    const span = this.#last - this.#first + 1n;
    if (BigInt(this.#used.size) >= span) return null;
    // A free offset exists; round-robin from the cursor so released addresses rest a while.
    for (;;) {
      const at = this.#cursor;
      this.#cursor = at >= this.#last ? this.#first : at + 1n;
      if (!this.#used.has(at)) {
        this.#used.add(at);
        return at;
      }
    }
  }

  give(offset: bigint): void {
    this.#used.delete(offset);
  }

  format(offset: bigint): string {
    return formatIp(fromBig(this.#base + offset, this.#length));
  }
}

function family(text: string, version: 4 | 6, where: string): FamilyPool | null {
  if (text === '') return null;
  const cidr = parseCidr(text);
  if (cidr.bytes.length !== (version === 4 ? 4 : 16)) {
    throw new OxyError(
      OXY_ERR.INVALID_APP,
      `${where}: ${JSON.stringify(text)} is not an IPv${version} prefix`,
    );
  }
  return new FamilyPool(cidr, where);
}

/** The pool of one endpoint. */
export class IpPool {
  readonly #v4: FamilyPool | null;
  readonly #v6: FamilyPool | null;
  /** The proxy's address in each family, the tunnels' gateway. */
  readonly gateways: IpGateways;

  /** `where` is the settings path (`endpoints.main.masque.ip_pool`), named in start-up errors. */
  constructor(ipv4: string, ipv6: string, where: string) {
    this.#v4 = family(ipv4, 4, `${where}.ipv4`);
    this.#v6 = family(ipv6, 6, `${where}.ipv6`);
    if (this.#v4 === null && this.#v6 === null) {
      throw new OxyError(
        OXY_ERR.INVALID_APP,
        `${where}: give an ipv4 or an ipv6 prefix (or disable CONNECT-IP)`,
      );
    }
    this.gateways = { v4: this.#v4?.gateway ?? null, v6: this.#v6?.gateway ?? null };
  }

  /** Addresses leased now. */
  get leased(): number {
    return Math.max(this.#v4?.used ?? 0, this.#v6?.used ?? 0);
  }

  /** One address of every configured family, or null when one of them is exhausted. */
  lease(): IpLease | null {
    const a = this.#v4?.take() ?? null;
    if (this.#v4 !== null && a === null) return null;
    const b = this.#v6?.take() ?? null;
    if (this.#v6 !== null && b === null) {
      if (a !== null) this.#v4?.give(a);
      return null;
    }
    let released = false;
    return {
      v4: a === null ? null : (this.#v4?.format(a) ?? null),
      v6: b === null ? null : (this.#v6?.format(b) ?? null),
      release: () => {
        if (released) return;
        released = true;
        if (a !== null) this.#v4?.give(a);
        if (b !== null) this.#v6?.give(b);
      },
    };
  }
}

const pools = new WeakMap<object, IpPool>();

/** Records `pool` as the pool of `endpoint` (the MASQUE on-ramp does, once). */
export function registerIpPool(endpoint: object, pool: IpPool): void {
  pools.set(endpoint, pool);
}

/** The gateway addresses of `endpoint`'s pool, or null when it serves no CONNECT-IP. */
export function ipGatewaysOf(endpoint: object): IpGateways | null {
  return pools.get(endpoint)?.gateways ?? null;
}
