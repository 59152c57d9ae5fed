/**
 * The runtime of one running app: everything the on-ramps and pipelines share (resolved
 * hooks, ext factories, settings, the resolver, the blocklist, the audit sink), and the
 * registry of live connections that a drain (restart or shutdown) walks.
 *
 * Ordering rule: built once in `startProxy`, after `start()` returned the hooks and before any
 * endpoint listens; read-only afterwards except for the registry and the draining flag.
 */
import { log } from 'foundations/telemetry';
import { type AuditSink, openAudit } from './audit.ts';
import type { ErasedExtFactories } from './context/ext.ts';
import type { IngressConnection } from './context/state.ts';
import { DnsResolver } from './dns/resolver.ts';
import { UpstreamHealth } from './egress/upstream-select.ts';
import { hookFailed, isOxyError, OXY_ERR, type OxyError } from './errors.ts';
import { type FastPaths, planFastPaths } from './fast-paths.ts';
import type { TcpUpgrade } from './flows/ip/port.ts';
import type { UpstreamProxy } from './hooks/egress.ts';
import type { ResolvedHooks } from './hooks/run.ts';
import { CidrBlocklist } from './offramps/tcp/blocklist.ts';
import { loadUpstreamTrust, type UpstreamTrust } from './offramps/tls/connect.ts';
import { upstreamProxyFromSettings } from './offramps/upstream-proxy/settings.ts';
import type { AppSettings } from './settings.ts';
import { dnsMetrics, hookMetrics } from './telemetry/metrics.ts';
import type { Interception } from './tunnels/tls-intercept/index.ts';

/** What every on-ramp and pipeline of one app shares. */
export class Runtime {
  readonly hooks: ResolvedHooks;
  readonly ext: ErasedExtFactories;
  readonly settings: AppSettings;
  readonly resolver: DnsResolver;
  readonly blocklist: CidrBlocklist;
  readonly audit: AuditSink;
  /** `egress.upstream_proxy` when enabled: the default decision becomes `viaProxy`. */
  readonly defaultProxy: UpstreamProxy | null;
  /** Passive health of the upstreams `EgressHook.selectUpstream` names (`egress.upstream_health`). */
  readonly upstreamHealth: UpstreamHealth;
  /** The fast paths this app may take, decided once from its hooks and settings. */
  readonly fast: FastPaths;
  /**
   * HTTPS interception (`interception.enabled`): the CA, the leaf minter and the hosts
   * matcher, loaded at start-up by `startProxy`; null when off.
   */
  readonly interception: Interception | null;
  /** Live ingress connections. */
  readonly connections = new Set<IngressConnection>();
  #draining = false;
  readonly #onDraining: (() => void)[] = [];
  /** Set by `drain()`: later responses carry `Connection: close`. */
  get draining(): boolean {
    return this.#draining;
  }
  set draining(on: boolean) {
    const starts = on && !this.#draining;
    this.#draining = on;
    if (starts) for (const fn of this.#onDraining) fn();
  }
  /**
   * Set when a drain's deadline cuts what remains: a unit ending then because its sockets were
   * destroyed is recorded as `drained`, not as a reset by its client or upstream.
   */
  cutting = false;

  /**
   * Resolves once what a drain's deadline cut (`of`: by default every connection) has left
   * `connections` and reported its end (its sockets' close events, then its record), or after
   * `boundMs`: the audit file closes after this.
   */
  async settleCut(boundMs: number, of: readonly IngressConnection[] | null = null): Promise<void> {
    const end = performance.now() + boundMs;
    const left = (): boolean =>
      of === null ? this.connections.size > 0 : of.some((c) => this.connections.has(c));
    while (left() && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
    // The last close events and the records they lead to come on the next turns.
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  }

  /** Calls `fn` when draining starts: for engines that cannot read the flag (the addon's). */
  onDraining(fn: () => void): void {
    this.#onDraining.push(fn);
  }
  #upstreamTrust: UpstreamTrust | null = null;
  #tcpUpgrade: Promise<TcpUpgrade> | null = null;

  constructor(
    hooks: ResolvedHooks,
    ext: ErasedExtFactories,
    settings: AppSettings,
    interception: Interception | null = null,
  ) {
    this.hooks = hooks;
    this.interception = interception;
    this.ext = ext;
    this.settings = settings;
    this.resolver = new DnsResolver(settings.egress.dns, {
      events: {
        onHit: () => dnsMetrics.cache_hits_total().inc(),
        onMiss: () => dnsMetrics.cache_misses_total().inc(),
      },
    });
    // The settings helper's output type still carries its parse-failure branch; values are strings.
    this.blocklist = new CidrBlocklist(settings.egress.blocked_cidrs as readonly string[]);
    this.audit = openAudit(settings.audit);
    this.defaultProxy = upstreamProxyFromSettings(settings.egress.upstream_proxy) ?? null;
    const health = settings.egress.upstream_health;
    this.upstreamHealth = new UpstreamHealth(health.failures, health.cooldown);
    // Named CA files are read now, so a bad one fails the start naming egress.tls.extra_ca[i].
    if ((settings.egress.tls?.extra_ca.length ?? 0) > 0)
      this.#upstreamTrust = loadUpstreamTrust(settings.egress.tls);
    this.fast = planFastPaths({
      hooks,
      egressExt: ext.egress !== null,
      defaultProxy: this.defaultProxy !== null,
      responseBodyLimit: Object.values(settings.endpoints).some(
        (ep) => ep.protocol === 'http' && ep.max_response_body > 0,
      ),
      interception: interception !== null,
    });
  }

  /**
   * The CAs origins are verified against (system store plus `egress.tls.extra_ca`), for
   * `connectTls` (offramps/tls/connect.ts). Built on first use when no extra CA is configured.
   */
  get upstreamTrust(): UpstreamTrust {
    this.#upstreamTrust ??= loadUpstreamTrust(this.settings.egress.tls ?? { extra_ca: [] });
    return this.#upstreamTrust;
  }

  /**
   * The process's IP→TCP upgrade service (`flows/ip/tcp-upgrade.ts`), started on the first call
   * (the first upgraded TCP flow of any IP tunnel) and shared after. A failed start stays failed:
   * every later flow gets the same rejection instead of a new namespace attempt per SYN.
   */
  tcpUpgrade(): Promise<TcpUpgrade> {
    if (this.#tcpUpgrade === null) {
      this.#tcpUpgrade = import('./flows/ip/tcp-upgrade.ts').then((m) => m.startTcpUpgrade(this));
      // The rejection is handled by every caller; this keeps an unused one from being "unhandled".
      this.#tcpUpgrade.catch(() => {});
    }
    return this.#tcpUpgrade;
  }

  /** Closes the IP→TCP upgrade service if it was started (at shutdown, after the drain). */
  async closeTcpUpgrade(): Promise<void> {
    const started = this.#tcpUpgrade;
    this.#tcpUpgrade = null;
    if (started === null) return;
    let up: TcpUpgrade;
    try {
      up = await started;
    } catch {
      return; // Named boundary: a service that never started has nothing to close.
    }
    await up.close();
  }

  /**
   * Records a hook failure once: logged with the current (connection or request) context's
   * fields, counted, and returned as the `OXY_ERR_HOOK_FAILED` error that fails the caller.
   */
  hookFailed(hook: string, thrown: unknown): OxyError {
    // A block from a hook that returns addresses (`validate.ts`) is the app's decision, not a failure.
    if (isOxyError(thrown) && thrown.code === OXY_ERR.EGRESS_BLOCKED) return thrown;
    const err = hookFailed(hook, thrown);
    hookMetrics.failures_total({ hook }).inc();
    log.error('app hook failed', { hook, err: err.cause ?? err });
    return err;
  }
}
