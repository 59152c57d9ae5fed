/**
 * A layer-3 firewall on an IP tunnel endpoint: the HTTP firewall example's host rule applied
 * to IP flows, plus port rules. Each new flow is decided once, from its 5-tuple:
 *
 * - to an address of a blocked host (the names are resolved at start, and again every minute)
 *   or inside a blocked CIDR: rejected (the client's TCP sees a RST, UDP an ICMP "prohibited");
 * - TCP to an allowed port (80 by default): upgraded to a stream, which then goes through
 *   the egress pipeline like any CONNECT tunnel (egress.blocked_cidrs, audit); when the
 *   client's first bytes are an HTTP request (`TunnelHook.handleTunnelStart`), the stream is
 *   parsed as HTTP and each request gets the HTTP firewall example's rules (`checkRequest`:
 *   blocked hosts by the `Host` field, blocked path prefixes), answered 403 when refused;
 * - UDP to an allowed port (53 by default): upgraded into a datagram session;
 * - anything else: rejected.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { s } from 'foundations/settings';
import { defineApp, IpFlowDecision, type IpFlowView, TunnelDecision } from 'oxy';
import { checkRequest } from '../http-firewall/app.ts';

const L3FirewallSettings = s.object('The layer-3 firewall rules.', {
  blocked_hosts: s.list(
    'Host names (or IPs) no flow may reach; names are resolved at start and every minute.',
    s.str('A host name.', ''),
    ['blocked.example'],
  ),
  blocked_cidrs: s.cidrList('Destination ranges no flow may reach.', []),
  blocked_paths: s.list(
    'Path prefixes no HTTP request inside an upgraded TCP flow may ask for.',
    s.str('A path prefix.', '/'),
    ['/admin'],
  ),
  tcp_ports: s.list(
    'TCP destination ports upgraded to streams.',
    s.int('A port.', 80, { min: 1, max: 65535 }),
    [80],
  ),
  udp_ports: s.list(
    'UDP destination ports upgraded to datagram sessions.',
    s.int('A port.', 53, { min: 1, max: 65535 }),
    [53],
  ),
});

/** The rules as the flow decision reads them. */
export interface L3Rules {
  /** Resolved addresses of the blocked hosts, refreshed in place. */
  readonly blockedAddresses: Set<string>;
  readonly blockedCidrs: BlockList;
  readonly tcpPorts: ReadonlySet<number>;
  readonly udpPorts: ReadonlySet<number>;
}

/** The decision for one new flow (pure: the tests call it directly too). */
export function decideFlow(rules: L3Rules, flow: IpFlowView): IpFlowDecision {
  const dst = flow.dst.host;
  if (rules.blockedAddresses.has(dst) || rules.blockedCidrs.check(dst, flow.version === 4 ? 'ipv4' : 'ipv6'))
    return IpFlowDecision.reject('blocked_destination');
  if (flow.protocol === 'tcp' && rules.tcpPorts.has(flow.dst.port)) return IpFlowDecision.upgrade();
  if (flow.protocol === 'udp' && rules.udpPorts.has(flow.dst.port)) return IpFlowDecision.upgrade();
  return IpFlowDecision.reject('port_not_allowed');
}

/** Resolves `hosts` into `into` (IP literals as they are; a name that does not resolve is skipped). */
async function resolveHosts(hosts: readonly string[], into: Set<string>): Promise<void> {
  const next = new Set<string>();
  for (const h of hosts) {
    if (isIP(h) !== 0) next.add(h);
    else for (const a of await lookup(h, { all: true }).catch(() => [])) next.add(a.address);
  }
  into.clear();
  for (const a of next) into.add(a);
}

export const app = defineApp({
  name: 'l3-firewall',
  version: '0.1.0',
  description: 'IP tunnel endpoint that upgrades allowed flows and rejects the rest',
  settings: { app: L3FirewallSettings },
  async start(settings) {
    const blockedCidrs = new BlockList();
    for (const c of settings.app.blocked_cidrs as readonly string[]) {
      const [net, bits] = c.split('/');
      blockedCidrs.addSubnet(net as string, Number(bits), isIP(net as string) === 6 ? 'ipv6' : 'ipv4');
    }
    const rules: L3Rules = {
      blockedAddresses: new Set(),
      blockedCidrs,
      tcpPorts: new Set(settings.app.tcp_ports),
      udpPorts: new Set(settings.app.udp_ports),
    };
    await resolveHosts(settings.app.blocked_hosts, rules.blockedAddresses);
    setInterval(() => void resolveHosts(settings.app.blocked_hosts, rules.blockedAddresses), 60_000).unref();
    const hosts = new Set(settings.app.blocked_hosts.map((h) => h.toLowerCase()));
    const paths = settings.app.blocked_paths;
    return {
      ipFlow: { handleFlow: (flow) => decideFlow(rules, flow) },
      // HTTP inside an upgraded flow is parsed, so the HTTP rules apply to each request.
      tunnel: {
        handleTunnelStart: (first, ctx) =>
          ctx.kind === 'ip-tcp' && first.kind === 'http'
            ? TunnelDecision.http()
            : TunnelDecision.passThrough(),
      },
      httpRequest: { handleRequest: (head) => checkRequest(hosts, paths, head) },
    };
  },
});
