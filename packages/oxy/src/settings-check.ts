/**
 * Oxy's checks of its settings beyond their schema: every validation start-up runs short of
 * binding sockets, by the same functions start-up calls (TLS credentials, HTTP/2 limits, DNS
 * nameservers), plus what only shows when a socket is bound or a file opened (two endpoints on
 * one address, the audit file's directory, the source address). `bootstrap` gives this to the
 * CLI as `ServiceSpec.check`, so `--check`, `--restart` and a start all run it, and a
 * configuration `--check` accepts starts.
 *
 * `oxySettingsWarnings` finds what starts but cannot work as written (`ServiceSpec.warnings`).
 *
 * Ordering rule: read-only. Files are read, nothing is created, opened for writing or bound.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { type SettingsProblem, unwritableFile } from 'foundations/settings';
import { workerCount } from 'foundations/workers';
import { type ListenAddr, unmappedIp } from './context/addr.ts';
import { DnsResolver } from './dns/resolver.ts';
import { reachedIp, reachesListener } from './egress/self.ts';
import { CidrBlocklist } from './offramps/tcp/blocklist.ts';
import { loadUpstreamTrust } from './offramps/tls/connect.ts';
import { http2ServerOptions } from './onramps/http2/server.ts';
import { masqueParts } from './onramps/masque/onramp.ts';
import { loadSecureContext } from './onramps/tls/credentials.ts';
import { udpSettingsProblems } from './onramps/udp/checks.ts';
import type { AppSettings } from './settings.ts';
import { checkInterceptionCa } from './tunnels/tls-intercept/ca.ts';
import { compileHostPatterns } from './tunnels/tls-intercept/hosts.ts';

/** An error from a start-up validator as a problem: `"<key>: <message>"` split at the key. */
function problemOf(e: unknown, fallbackPath: string): SettingsProblem {
  const issues = (e as { issues?: readonly { path: string; message: string }[] }).issues;
  if (issues !== undefined && issues[0] !== undefined)
    return { path: issues[0].path, message: issues[0].message };
  const message = e instanceof Error ? e.message : String(e);
  const m = /^([A-Za-z0-9_.[\]"-]+): (.*)$/s.exec(message);
  return m === null ? { path: fallbackPath, message } : { path: m[1] as string, message: m[2] as string };
}

function attempt(problems: SettingsProblem[], where: string, run: () => unknown): void {
  try {
    run();
  } catch (e) {
    problems.push(problemOf(e, where));
  }
}

/** True when binding both `a` and `b` would fail with EADDRINUSE (port 0 never clashes). */
function clashes(a: ListenAddr, b: ListenAddr): boolean {
  if (a.kind === 'unix' || b.kind === 'unix')
    return a.kind === 'unix' && b.kind === 'unix' && a.path === b.path;
  if (a.port === 0 || a.port !== b.port) return false;
  if (a.host === b.host) return true;
  // `::` takes IPv4 too (dual stack); `0.0.0.0` takes every IPv4 address.
  if (a.host === '::' || b.host === '::') return true;
  const v4 = (h: string) => net.isIPv4(h) || h === 'localhost';
  return (a.host === '0.0.0.0' && v4(b.host)) || (b.host === '0.0.0.0' && v4(a.host));
}

function describe(addr: ListenAddr): string {
  return addr.kind === 'unix'
    ? addr.path
    : `${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`;
}

/** Adds a problem for each address in `seen` that clashes with an earlier one. */
function clashesIn(seen: readonly { key: string; addr: ListenAddr }[], problems: SettingsProblem[]): void {
  for (let i = 0; i < seen.length; i++) {
    for (let j = 0; j < i; j++) {
      const [earlier, later] = [seen[j], seen[i]] as [(typeof seen)[number], (typeof seen)[number]];
      if (clashes(earlier.addr, later.addr)) {
        problems.push({
          path: later.key,
          message: `${describe(later.addr)} clashes with ${earlier.key} (${describe(earlier.addr)}): both cannot listen`,
        });
      }
    }
  }
}

/** Every problem start-up would find in `settings` before (or when) binding, as keys and messages. */
export function checkOxySettings(settings: AppSettings): SettingsProblem[] {
  const problems: SettingsProblem[] = [];
  const seen: { key: string; addr: ListenAddr }[] = [];
  const udpSeen: { key: string; addr: ListenAddr }[] = [];
  for (const [name, ep] of Object.entries(settings.endpoints)) {
    const where = `endpoints.${name}`;
    if (ep.protocol === 'http') {
      const { tls, http2 } = ep;
      if (tls.enabled) attempt(problems, `${where}.tls`, () => loadSecureContext(tls, `${where}.tls`));
      if (http2.enabled)
        attempt(problems, `${where}.http2`, () => http2ServerOptions(http2, `${where}.http2`));
      if (ep.masque.enabled) attempt(problems, `${where}.masque`, () => masqueParts(ep.masque, where));
    }
    if ((ep.protocol === 'http' || ep.protocol === 'tcp') && ep.tcp_congestion_control !== '') {
      const why = congestionRefusal(ep.tcp_congestion_control);
      if (why !== null) problems.push({ path: `${where}.tcp_congestion_control`, message: why });
    }
    if (ep.protocol === 'ip_seqpacket' || ep.protocol === 'ip_gue') ipTunnelProblems(where, ep.ip, problems);
    if (ep.protocol === 'ip_seqpacket' && ep.addr.kind !== 'unix')
      problems.push({
        path: `${where}.addr`,
        message: 'an ip_seqpacket endpoint listens on a Unix socket path',
      });
    if (ep.protocol === 'udp') problems.push(...udpSettingsProblems(name, ep));
    if ((ep.protocol === 'ip_gue' || ep.protocol === 'udp') && ep.addr.kind !== 'tcp')
      problems.push({
        path: `${where}.addr`,
        message: `a ${ep.protocol} endpoint listens on host:port, not a path`,
      });
    // The supervisor of `workers: N` shares stream listeners only; datagram sessions and IP
    // tunnels keep per-process state that several processes on one socket would split.
    if (ep.protocol !== 'http' && ep.protocol !== 'tcp' && workerCount(settings.workers) > 1)
      problems.push({
        path: `${where}.protocol`,
        message: `a ${ep.protocol} endpoint runs in one process: set workers: 1 (workers: ${settings.workers} shares only http and tcp listeners)`,
      });
    const target = ep.protocol === 'tcp' ? ep.tcp.target : ep.protocol === 'udp' ? ep.udp.target : null;
    if (target !== null && pointsAtItself(ep.addr, target))
      problems.push({
        path: `${where}.${ep.protocol}.target`,
        message: `${describe({ kind: 'tcp', ...target })} is this endpoint's own address (${describe(ep.addr)}): every ${ep.protocol === 'tcp' ? 'connection' : 'datagram'} would come back to it`,
      });
    // A udp (or GUE) endpoint may share its port with a TCP one: only like transports clash.
    if (ep.protocol === 'udp' || ep.protocol === 'ip_gue')
      udpSeen.push({ key: `${where}.addr`, addr: ep.addr });
    else seen.push({ key: `${where}.addr`, addr: ep.addr });
  }
  clashesIn(udpSeen, problems);
  targetCycles(settings, problems);
  const server = settings.telemetry.server;
  if (server.enabled) seen.push({ key: 'telemetry.server.addr', addr: server.addr as ListenAddr });
  clashesIn(seen, problems);
  attempt(problems, 'egress.dns', () => new DnsResolver(settings.egress.dns));
  const upstreamTls = settings.egress.tls;
  if (upstreamTls !== undefined && upstreamTls.extra_ca.length > 0)
    attempt(problems, 'egress.tls.extra_ca', () => loadUpstreamTrust(upstreamTls));
  const source = settings.egress.source_addr;
  const foreign = source === null ? null : foreignSource(source);
  if (foreign !== null) problems.push({ path: 'egress.source_addr', message: foreign });
  // What `loadInterception` checks at start, short of generating a CA.
  const interception = settings.interception;
  if (interception.enabled) {
    attempt(problems, 'interception.hosts', () => compileHostPatterns(interception.hosts));
    attempt(problems, 'interception.ca', () => checkInterceptionCa(interception.ca));
  }
  if (settings.audit.output === 'file') {
    const why = unwritableFile(settings.audit.path, false);
    if (why !== null) problems.push({ path: 'audit.path', message: why });
  }
  return problems;
}

/**
 * Why every connect from `source` (`egress.source_addr`) would fail with EADDRNOTAVAIL, or null:
 * it is not an IP, or not an address of this host's interfaces (as this process sees them, in
 * its own network namespace). A wildcard binds nothing and is allowed; so is any address when
 * `ip_nonlocal_bind` lets the kernel bind foreign ones. A loopback interface's whole IPv4 range is
 * local (`127.0.0.2` binds, though `lo` lists only `127.0.0.1/8`), as the kernel routes it. An
 * IPv4-mapped address (`::ffff:10.0.0.1`) is its IPv4 address, as `sourceFor` applies it.
 */
function foreignSource(source: string): string | null {
  const family = net.isIP(source);
  if (family === 0) return `expected an IP address of this host, got "${source}"`;
  const ip = unmappedIp(source.toLowerCase()).replace(/%.*$/, ''); // a zone names no address
  const own = new net.BlockList();
  own.addAddress('0.0.0.0', 'ipv4');
  own.addAddress('::', 'ipv6');
  for (const i of Object.values(os.networkInterfaces()).flat()) {
    if (i === undefined) continue;
    if (i.internal && i.family === 'IPv4' && i.cidr !== null)
      own.addSubnet(i.address, Number(i.cidr.split('/')[1]), 'ipv4');
    else own.addAddress(i.address, i.family === 'IPv4' ? 'ipv4' : 'ipv6');
  }
  const v4 = net.isIPv4(ip);
  if (own.check(ip, v4 ? 'ipv4' : 'ipv6') || nonlocalBind(v4 ? 'ipv4' : 'ipv6')) return null;
  return `${source} is not an address of this host (ip addr shows this host's addresses); ~ lets the kernel choose`;
}

/** True when net.<family>.ip_nonlocal_bind lets a socket bind an address the host does not have. */
function nonlocalBind(family: 'ipv4' | 'ipv6'): boolean {
  try {
    return fs.readFileSync(`/proc/sys/net/${family}/ip_nonlocal_bind`, 'utf8').trim() === '1';
  } catch {
    return false; // no /proc: the interfaces decide
  }
}

/** An IP tunnel endpoint's gateways of the right family, and an absolute off-ramp path. */
function ipTunnelProblems(
  where: string,
  ip: { gateway_v4: string; gateway_v6: string; offramp: string | null },
  problems: SettingsProblem[],
): void {
  if (!net.isIPv4(ip.gateway_v4))
    problems.push({
      path: `${where}.ip.gateway_v4`,
      message: `expected an IPv4 address, got "${ip.gateway_v4}"`,
    });
  if (!net.isIPv6(ip.gateway_v6))
    problems.push({
      path: `${where}.ip.gateway_v6`,
      message: `expected an IPv6 address, got "${ip.gateway_v6}"`,
    });
  if (ip.offramp !== null && !ip.offramp.startsWith('/'))
    problems.push({
      path: `${where}.ip.offramp`,
      message: `must be an absolute path (it is connected to once per tunnel, from any working directory), got "${ip.offramp}"`,
    });
}

/** One of /proc/sys/net/ipv4's lists of congestion control names, or null when it cannot be read. */
function congestionList(which: 'available' | 'allowed'): string[] | null {
  try {
    return fs.readFileSync(`/proc/sys/net/ipv4/tcp_${which}_congestion_control`, 'utf8').trim().split(/\s+/);
  } catch {
    return null;
  }
}

/** True when this process holds CAP_NET_ADMIN (bit 12 of CapEff in /proc/self/status). */
function hasNetAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m !== null && ((BigInt(`0x${m[1]}`) >> 12n) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** True when the kernel has a module for `name` that it would load on first use. */
function hasCongestionModule(name: string): boolean {
  const dir = `/lib/modules/${os.release()}`;
  try {
    if (fs.readFileSync(`${dir}/modules.builtin`, 'utf8').includes(`/tcp_${name}.ko`)) return true;
  } catch {}
  try {
    return fs.readdirSync(`${dir}/kernel/net/ipv4`).some((f) => f.startsWith(`tcp_${name}.ko`));
  } catch {
    return false;
  }
}

/**
 * Why setting TCP_CONGESTION `name` on a listening socket would fail at start (the kernel's own
 * rule: an algorithm it has, or a module it loads for CAP_NET_ADMIN; one outside
 * net.ipv4.tcp_allowed_congestion_control only with CAP_NET_ADMIN), or null when it would work
 * or /proc cannot tell.
 */
function congestionRefusal(name: string): string | null {
  const available = congestionList('available');
  if (available === null) return null;
  const admin = hasNetAdmin();
  if (!available.includes(name)) {
    if (admin && hasCongestionModule(name)) return null;
    return `the kernel has no congestion control "${name}" (net.ipv4.tcp_available_congestion_control: ${available.join(' ')}); modprobe tcp_${name} if it is a module`;
  }
  const allowed = congestionList('allowed');
  if (admin || allowed === null || allowed.includes(name)) return null;
  return `"${name}" is not in net.ipv4.tcp_allowed_congestion_control (${allowed.join(' ')}), and Oxy lacks CAP_NET_ADMIN: add it there`;
}

/**
 * True when `target` (an IP literal or `localhost`) is where `addr` listens: the same port, and
 * the same address, or any address of this host for a wildcard listener.
 */
function pointsAtItself(addr: ListenAddr, target: { host: string; port: number }): boolean {
  if (addr.kind !== 'tcp' || addr.port === 0 || addr.port !== target.port) return false;
  return literalAddresses(target.host).some((ip) => reachesListener(addr.host, ip));
}

/**
 * Fixed targets that go round through other endpoints of the same transport (`a` to `b`, `b`
 * back to `a`): each connection or datagram would make another without end, as one pointing at
 * itself would (that case is reported above). One problem per cycle, at its first endpoint.
 */
function targetCycles(settings: AppSettings, problems: SettingsProblem[]): void {
  type Hop = { name: string; addr: ListenAddr; target: { host: string; port: number } };
  const hops = (protocol: 'tcp' | 'udp'): Hop[] =>
    Object.entries(settings.endpoints).flatMap(([name, ep]) => {
      const target =
        ep.protocol === 'tcp' && protocol === 'tcp'
          ? ep.tcp.target
          : ep.protocol === 'udp' && protocol === 'udp'
            ? ep.udp.target
            : null;
      return target === null ? [] : [{ name, addr: ep.addr, target }];
    });
  for (const protocol of ['tcp', 'udp'] as const) {
    const all = hops(protocol);
    const next = (hop: Hop) => all.find((other) => other !== hop && pointsAtItself(other.addr, hop.target));
    const reported = new Set<string>();
    for (const start of all) {
      if (reported.has(start.name)) continue;
      const path: Hop[] = [start];
      for (let hop = next(start); hop !== undefined && !path.includes(hop); hop = next(hop)) path.push(hop);
      const last = path[path.length - 1] as Hop;
      if (path.length < 2 || next(last) !== start) continue;
      for (const hop of path) reported.add(hop.name);
      const ring = [...path, start].map((h) => `endpoints.${h.name}`).join(' -> ');
      problems.push({
        path: `endpoints.${start.name}.${protocol}.target`,
        message: `${describe({ kind: 'tcp', ...start.target })} leads back to this endpoint through other endpoints' targets (${ring}): every ${protocol === 'tcp' ? 'connection' : 'datagram'} would go round them without end`,
      });
    }
  }
}

/** The addresses `host` names without a lookup: itself if an IP, loopback's for `localhost`. */
function literalAddresses(host: string): string[] {
  if (reachedIp(host) !== null) return [host];
  return host === 'localhost' ? ['127.0.0.1', '::1'] : [];
}

/** The first of `cidrs` that holds `ip`, one of its own family first (`::1` is in `0.0.0.0/8` too). */
function rangeOf(cidrs: readonly string[], ip: string): string {
  const holding = cidrs.filter((c) => new CidrBlocklist([c]).has(ip));
  return holding.find((c) => c.includes(':') === ip.includes(':')) ?? (holding[0] as string);
}

/**
 * Settings under which an endpoint refuses everything, whatever the client sends: PROXY headers
 * required from nobody, or a `tcp` or `udp` endpoint with no target and no header to name one.
 * Warnings, not errors: an egress hook may be what chooses the target.
 */
function refusesAll(name: string, ep: AppSettings['endpoints'][string], warnings: SettingsProblem[]): void {
  const pp = 'proxy_protocol' in ep ? ep.proxy_protocol : null;
  if (pp?.enabled && pp.trusted_cidrs.length === 0)
    warnings.push({
      path: `endpoints.${name}.proxy_protocol.trusted_cidrs`,
      message:
        'is empty while proxy_protocol is enabled: no peer may send a header, so every client is refused',
    });
  const target = ep.protocol === 'tcp' ? ep.tcp.target : ep.protocol === 'udp' ? ep.udp.target : undefined;
  if (target === null && pp?.enabled !== true)
    warnings.push({
      path: `endpoints.${name}.${ep.protocol}.target`,
      message:
        'is empty and proxy_protocol is off, so nothing names a destination: every ' +
        `${ep.protocol === 'tcp' ? 'connection' : 'session'} is refused unless an EgressHook.handleConnection sends it somewhere`,
    });
}

/**
 * Settings that start but cannot work as written: a `tcp` or `udp` endpoint whose fixed target
 * is inside `egress.blocked_cidrs` (the default list blocks loopback and the private ranges),
 * so that every connection or session to it is refused (a reset or a dropped datagram, counted
 * as `OXY_ERR_EGRESS_BLOCKED`) unless an egress hook sends it elsewhere; and a `udp` endpoint
 * with `egress.upstream_proxy` on, which cannot carry its datagrams; a `tcp` endpoint's
 * `send_proxy_protocol` with the upstream proxy on, which it never reaches. A TCP target reached
 * through the upstream proxy is that proxy's to refuse, and a name is checked only when it
 * resolves, so neither is reported.
 */
export function oxySettingsWarnings(settings: AppSettings): SettingsProblem[] {
  let blocked: CidrBlocklist;
  try {
    blocked = new CidrBlocklist(settings.egress.blocked_cidrs as readonly string[]);
  } catch {
    return []; // a malformed entry is the schema's error, reported already
  }
  const warnings: SettingsProblem[] = [];
  const chained = settings.egress.upstream_proxy.enabled;
  for (const [name, ep] of Object.entries(settings.endpoints)) {
    refusesAll(name, ep, warnings);
    if (ep.protocol === 'udp' && chained) {
      warnings.push({
        path: `endpoints.${name}.protocol`,
        message:
          'egress.upstream_proxy is enabled, and an HTTP proxy cannot carry UDP: every session of ' +
          'this udp endpoint will be refused unless an egress hook decides a direct connection',
      });
      continue;
    }
    if (ep.protocol === 'tcp' && chained && ep.tcp.send_proxy_protocol !== 'off')
      warnings.push({
        path: `endpoints.${name}.tcp.send_proxy_protocol`,
        message:
          'egress.upstream_proxy is enabled: connections go through its CONNECT tunnels, and no ' +
          'PROXY header is sent unless an egress hook decides a direct connection',
      });
    const target =
      ep.protocol === 'tcp' && !chained ? ep.tcp.target : ep.protocol === 'udp' ? ep.udp.target : null;
    if (target === null) continue;
    const ips = literalAddresses(target.host);
    if (ips.length === 0 || !ips.every((ip) => blocked.has(ip))) continue;
    const ranges = [...new Set(ips.map((ip) => rangeOf(blocked.cidrs, ip)))];
    const what = ep.protocol === 'tcp' ? 'connection' : 'session';
    warnings.push({
      path: `endpoints.${name}.${ep.protocol}.target`,
      message:
        `${describe({ kind: 'tcp', ...target })} is inside egress.blocked_cidrs (${ranges.join(', ')}): ` +
        `every ${what} to it will be refused unless an egress hook sends it elsewhere; ` +
        'list only the ranges to refuse in egress.blocked_cidrs to allow it',
    });
  }
  return warnings;
}
