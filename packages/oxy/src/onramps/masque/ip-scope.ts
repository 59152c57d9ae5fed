/**
 * The scope of a CONNECT-IP tunnel (RFC 9484 §4.6): the destinations and IP protocol its
 * packets may have, as the proxy enforces them and advertises them in ROUTE_ADVERTISEMENT
 * (§4.7.3). A `*` target is every destination; an IP prefix target is that prefix; a DNS-name
 * target is the addresses the name resolves to, each a single-address prefix.
 *
 * Order for a DNS-name target (`resolveScope`), the egress pipeline's own steps
 * (`egress/connect.ts` `addressesOf`), once, before the tunnel is answered:
 * `EgressHook.dnsResolveOverride` (or the built-in resolver) → `handleUpstreamIps` →
 * `egress.blocked_cidrs` (none left: the blocked error, 403) → the families the endpoint's
 * pool serves (none left: unroutable, 502). Resolution errors are the resolver's (`DNS_*`,
 * 502/504). The scope is fixed for the tunnel's life: a later change of the name's addresses
 * does not change it.
 */
import net from 'node:net';
import { EgressState, type RequestState } from '../../context/state.ts';
import { addressesOf } from '../../egress/connect.ts';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { IpAddressRange } from '../../protocols/capsule/connect-ip.ts';
import { formatIp } from '../../protocols/capsule/ip-address.ts';
import { addressBytes, type Cidr, inCidr, parseCidr } from '../../protocols/ip/address.ts';
import type { ConnectIpRequest } from '../../protocols/masque/request.ts';
import type { Runtime } from '../../runtime.ts';
import type { IpGateways, IpLease } from './ip-pool.ts';

/** What a tunnel's packets may reach: `prefixes` null means every destination. */
export interface IpScope {
  readonly prefixes: readonly Cidr[] | null;
  /** The IP protocol allowed (`*`: any). */
  readonly ipproto: number | '*';
}

/** The scope of a `*` or IP prefix target, known from the request alone. */
export function literalScope(req: ConnectIpRequest): IpScope {
  const t = req.target;
  if (t.kind === 'dns') throw new TypeError('a DNS-name target needs resolveScope');
  const prefixes = t.kind === 'any' ? null : [parseCidr(`${t.address}/${t.prefixLength}`)];
  return { prefixes, ipproto: req.ipproto };
}

/**
 * The scope of a DNS-name target: the addresses `host` resolves to through the egress
 * pipeline (override or resolver, `handleUpstreamIps`, `blocked_cidrs`), kept to the families
 * `gateways` serves, without duplicates. Throws the pipeline's `OxyError` (DNS, hook, blocked)
 * or `OXY_ERR_UNREACHABLE` when no address of a served family is left.
 */
export async function resolveScope(
  rt: Runtime,
  request: RequestState,
  host: string,
  ipproto: number | '*',
  gateways: IpGateways,
): Promise<IpScope> {
  const target = { host, port: 0 };
  const eg = new EgressState(request.ingress, request, target, rt.ext);
  const ips = await addressesOf(rt, eg, target, false);
  const seen = new Set<string>();
  const prefixes: Cidr[] = [];
  for (const ip of ips) {
    const family = net.isIP(ip);
    if ((family === 4 ? gateways.v4 : family === 6 ? gateways.v6 : null) === null) continue;
    const bytes = addressBytes(ip);
    const key = bytes.toString('hex');
    if (seen.has(key)) continue;
    seen.add(key);
    prefixes.push({ bytes, prefix: bytes.length * 8 });
  }
  if (prefixes.length === 0) {
    throw new OxyError(
      OXY_ERR.UNREACHABLE,
      `${host} has no address of a family the address pool serves (${ips.join(', ')})`,
      { source: 'internal' },
    );
  }
  // RFC 9484 §4.7.3: ranges ordered by version, then start address (one protocol per scope).
  prefixes.sort((a, b) => a.bytes.length - b.bytes.length || a.bytes.compare(b.bytes));
  return { prefixes, ipproto };
}

/** The inclusive range of a prefix, as text. */
function prefixRange(c: Cidr): [string, string] {
  const lo = Uint8Array.from(c.bytes);
  const hi = Uint8Array.from(c.bytes);
  for (let bit = c.prefix; bit < c.bytes.length * 8; bit++) {
    const i = bit >> 3;
    const m = 0x80 >> (bit & 7);
    lo[i] = (lo[i] as number) & ~m;
    hi[i] = (hi[i] as number) | m;
  }
  return [formatIp(lo), formatIp(hi)];
}

const EVERYWHERE = { 4: parseCidr('0.0.0.0/0'), 6: parseCidr('::/0') } as const;

/**
 * The routes of the scope (RFC 9484 §4.7.3): for each family leased, IPv4 first, its prefixes
 * in order (the whole family for `*`), each with the scope's protocol (0 for `*`).
 */
export function scopeRoutes(scope: IpScope, lease: Pick<IpLease, 'v4' | 'v6'>): IpAddressRange[] {
  const protocol = scope.ipproto === '*' ? 0 : scope.ipproto;
  const routes: IpAddressRange[] = [];
  for (const version of [4, 6] as const) {
    if ((version === 4 ? lease.v4 : lease.v6) === null) continue;
    const len = version === 4 ? 4 : 16;
    for (const c of scope.prefixes ?? [EVERYWHERE[version]]) {
      if (c.bytes.length !== len) continue;
      const [start, end] = prefixRange(c);
      routes.push({ version, start, end, protocol });
    }
  }
  return routes;
}

/** Whether the `addrLength`-byte destination at `offset` of `buf` is inside the scope's prefixes. */
export function inScope(scope: IpScope, buf: Uint8Array, offset: number, addrLength: number): boolean {
  if (scope.prefixes === null) return true;
  for (const c of scope.prefixes) if (c.bytes.length === addrLength && inCidr(c, buf, offset)) return true;
  return false;
}
