/**
 * Running an app: from parsed settings to listening endpoints, and back down. `bootstrap`
 * (the CLI path) and tests both come through `startProxy`, so tests run exactly what
 * production runs, on ephemeral ports.
 *
 * Ordering rule: `start()` → hooks resolved (unknown names rejected) → runtime → endpoints
 * listen (in settings order) → each logged. `close()` drains, then closes the audit sink.
 */
import type net from 'node:net';
import type { DrainReason, Listeners } from 'foundations/restart';
import { parseSettings, type SettingsSource } from 'foundations/settings';
import { log } from 'foundations/telemetry';
import type { OxyApp } from './app.ts';
import { formatHostPort } from './context/addr.ts';
import { eraseExtFactories, eraseHooks } from './context/ext.ts';
import { EndpointState } from './context/state.ts';
import { acknowledgeAtOnce, describeListening, drain, openEndpoint } from './endpoints.ts';
import { OXY_ERR, OxyError } from './errors.ts';
import { type HookCall, resolveHooks } from './hooks/run.ts';
import { connectAcceptApplies, takeConnectAccept } from './onramps/http1/reactor-connect.ts';
import { createHttpOnRamp } from './onramps/http2/endpoint.ts';
import { acceptConnection, type SocketOnRamp } from './onramps/ingress.ts';
import { openIpGueOnRamp } from './onramps/ip-tunnel/gue.ts';
import { openIpSeqpacketOnRamp } from './onramps/ip-tunnel/seqpacket.ts';
import { createTcpOnRamp } from './onramps/tcp/onramp.ts';
import { rawAcceptApplies, takeRawAccept } from './onramps/tcp/raw-accept.ts';
import { chooseReactorMode, reactorAcceptApplies, takeReactorAccept } from './onramps/tcp/reactor-accept.ts';
import { openUdpOnRamp, type UdpOnRamp } from './onramps/udp/onramp.ts';
import { Runtime } from './runtime.ts';
import { type AppSettings, buildSettingsSchema } from './settings.ts';
import { ingressMetrics } from './telemetry/metrics.ts';

/** A running app. */
export interface RunningProxy {
  readonly runtime: Runtime;
  /** The listening servers by endpoint name (`http` and `tcp` endpoints). */
  readonly servers: ReadonlyMap<string, net.Server>;
  /** The `udp` endpoints by name. */
  readonly datagramEndpoints: ReadonlyMap<string, UdpOnRamp>;
  /** Where endpoint `name` (default `main`) listens, as `{ host, port }`. */
  address(name?: string): { host: string; port: number };
  /** Stops accepting, lets connections finish for up to `timeoutMs`, then closes the rest. */
  drain(timeoutMs: number): Promise<void>;
  /**
   * Starts draining without closing anything: later HTTP/1 responses carry `Connection: close`
   * and HTTP/2 sessions get GOAWAY. Idle keep-alive connections are left to their idle timeout
   * (closing them races with a client sending its next request). `udp` endpoints turn new
   * clients away; after a `restart` they also stop reading (the next process reads their
   * sockets), on a `shutdown` they read on for the sessions still open. The restart lifecycle
   * calls this, then waits for connections and destroys what remains at `restart.drain_timeout`.
   */
  beginDrain(reason?: DrainReason): void;
  /**
   * Waits for the datagram sessions of `udp` endpoints to end (they idle out, or their clients
   * stop), ending those left at `deadline` (a `Date.now()` time).
   */
  drainDatagrams(deadline: number): Promise<void>;
  /** `drain(0)`, then closes what the runtime opened (the audit file). */
  close(): Promise<void>;
}

/** Options of {@link startProxy}. */
export interface StartOptions {
  /** The previous process's `stateForRestart()` value. */
  readonly restoredState?: unknown;
  /** Receives every hook call (tests). */
  readonly record?: (call: HookCall) => void;
  /** The restart lifecycle's listeners: endpoints use inherited sockets and are handed over. */
  readonly listeners?: Listeners;
}

/** Starts `app` with `settings` (already parsed): calls `start`, then listens on every endpoint. */
export async function startProxy(
  app: OxyApp<never, never> | OxyApp,
  settings: AppSettings,
  options: StartOptions = {},
): Promise<RunningProxy> {
  const def = (app as OxyApp).definition;
  const ext = eraseExtFactories(def.ext as object | undefined);
  const typed = await def.start(settings as never, options.restoredState ?? null);
  const hooks = resolveHooks(
    eraseHooks(typed),
    options.record === undefined ? {} : { record: options.record },
  );
  // The interception CA is loaded (or generated) before anything listens: a bad one fails the
  // start. Imported only when on: certificate minting pulls in @peculiar/x509.
  const interception = settings.interception?.enabled
    ? await (await import('./tunnels/tls-intercept/index.ts')).loadInterception(settings.interception)
    : null;
  const rt = new Runtime(hooks, ext, settings, interception);
  const servers = new Map<string, net.Server>();
  const datagramEndpoints = new Map<string, UdpOnRamp>();
  const datagramOnRamps = new Set<unknown>();
  /** `ip_gue` endpoints' UDP addresses, for `address(name)`. */
  const ipEndpoints = new Map<string, { host: string; port: number }>();
  const onramps: { close(): void; drain(): Promise<void> }[] = [];
  // `target`: a `tcp` endpoint's fixed target (null for any other endpoint, or none fixed).
  const states = Object.entries(settings.endpoints).map(([name, ep]) => ({
    name,
    ep,
    endpoint: new EndpointState(name, ep, ext),
    target: ep.protocol === 'tcp' ? ep.tcp.target : null,
  }));
  try {
    chooseReactorMode(rt, states);
    for (const { name, ep, endpoint, target } of states) {
      if (ep.protocol === 'udp') {
        const udp = openUdpOnRamp(rt, endpoint, ep, options.listeners);
        onramps.push(udp);
        datagramEndpoints.set(name, udp);
        datagramOnRamps.add(udp);
        log.info('endpoint listening', {
          endpoint: name,
          addr: formatHostPort(udp.address().host, udp.address().port),
          protocol: ep.protocol,
        });
        continue;
      }
      if (ep.protocol === 'ip_seqpacket') {
        const ip = openIpSeqpacketOnRamp(rt, endpoint, ep, options.listeners);
        onramps.push(ip);
        log.info('endpoint listening', { endpoint: name, addr: ip.path, protocol: ep.protocol });
        continue;
      }
      if (ep.protocol === 'ip_gue') {
        const gue = openIpGueOnRamp(rt, endpoint, ep, options.listeners);
        onramps.push(gue);
        ipEndpoints.set(name, gue.address());
        log.info('endpoint listening', {
          endpoint: name,
          addr: formatHostPort(gue.address().host, gue.address().port),
          protocol: ep.protocol,
        });
        continue;
      }
      const onramp = createOnRamp(rt, endpoint);
      onramps.push(onramp);
      // A `tcp` endpoint whose connections all go whole to the addon skips Node's sockets.
      const raw = target !== null && rawAcceptApplies(rt, endpoint, target);
      // A `tcp` endpoint holds its clients' ACKs only where the addon bounds the hold: the few
      // connections Node still accepts there acknowledge at once.
      const smartAccept = ep.tcp_smart_accept && (ep.protocol !== 'tcp' || raw);
      const server = await openEndpoint(name, ep.addr, options.listeners, {
        congestion: ep.tcp_congestion_control,
        smartAccept,
      });
      const ackNow = smartAccept && ep.protocol === 'tcp';
      server.on('connection', (socket: net.Socket) => {
        if (ackNow) acknowledgeAtOnce(socket);
        acceptConnection(rt, endpoint, socket, onramp);
      });
      if (target !== null && raw) {
        const tracker = options.listeners?.connections ?? null;
        // With nothing to decide per connection, the addon's reactor thread accepts them too.
        if (takeRawAccept(rt, endpoint, server, target, tracker) && reactorAcceptApplies(rt, target))
          takeReactorAccept(rt, endpoint, server, target, tracker);
      }
      // An `http` endpoint whose only JS per connection is the CONNECT policy: the reactor
      // thread accepts and reads the heads (`onramps/http1/reactor-connect.ts`).
      const tls = (onramp as { tls?: boolean }).tls === true;
      if (ep.protocol === 'http' && connectAcceptApplies(rt, endpoint, tls))
        takeConnectAccept(rt, endpoint, server, options.listeners?.connections ?? null);
      servers.set(name, server);
      ingressMetrics.connections_active({ endpoint: name }).set(0);
      log.info('endpoint listening', {
        endpoint: name,
        addr: describeListening(server),
        protocol: ep.protocol,
      });
    }
  } catch (e) {
    for (const s of servers.values()) s.close();
    for (const o of onramps) o.close();
    // The runtime opened the audit file: a failed start must not leave it open.
    await rt.audit.close();
    throw e;
  }
  let closing: Promise<void> | null = null;
  return {
    runtime: rt,
    servers,
    datagramEndpoints,
    address(name = 'main') {
      const udp = datagramEndpoints.get(name);
      if (udp !== undefined) return udp.address();
      const gue = ipEndpoints.get(name);
      if (gue !== undefined) return gue;
      const a = servers.get(name)?.address();
      if (a === null || a === undefined || typeof a === 'string')
        throw new Error(`endpoint ${name} has no TCP address`);
      return { host: a.address, port: a.port };
    },
    drain: (timeoutMs) => drain(rt, [...servers.values()], timeoutMs, onramps),
    beginDrain(reason = 'shutdown') {
      rt.draining = true;
      for (const o of onramps) if (!datagramOnRamps.has(o)) void o.drain();
      for (const u of datagramEndpoints.values()) u.beginDrain(reason === 'restart');
    },
    async drainDatagrams(deadline) {
      await Promise.all([...datagramEndpoints.values()].map((u) => u.drain(deadline)));
    },
    close() {
      closing ??= (async () => {
        await drain(rt, [...servers.values()], 0, onramps);
        for (const o of onramps) o.close();
        await rt.closeTcpUpgrade();
        await rt.audit.close();
      })();
      return closing;
    },
  };
}

/** An endpoint's on-ramp as the proxy drives it: serve accepted sockets, drain, close. */
type EndpointOnRamp = SocketOnRamp & { drain(): Promise<void>; close(): void };

/** The on-ramp of `endpoint`, chosen by its `protocol`. */
function createOnRamp(rt: Runtime, endpoint: EndpointState): EndpointOnRamp {
  const ep = endpoint.settings;
  switch (ep.protocol) {
    case 'http':
      return createHttpOnRamp(rt, endpoint);
    case 'tcp':
      return { ...createTcpOnRamp(rt, ep), drain: () => Promise.resolve(), close: () => {} };
    case 'udp':
    case 'ip_seqpacket':
    case 'ip_gue':
      throw new OxyError(
        OXY_ERR.INVALID_APP,
        `endpoints.${endpoint.name}.protocol: ${ep.protocol} endpoints have no socket on-ramp`,
      );
  }
}

/**
 * Parses settings for `app` from in-memory sources merged over the defaults (what `-c` files
 * do on the command line). Throws a `SettingsError` naming the key path.
 */
export function appSettings(
  app: OxyApp<never, never> | OxyApp,
  sources: readonly SettingsSource[] = [],
): AppSettings {
  const def = (app as OxyApp).definition;
  const schema = buildSettingsSchema(def.settings ?? {}, def.name);
  return normalizeSettings(parseSettings(schema, sources) as AppSettings);
}

/** Gives settings without app sections `app: null`, as `AppSettings` promises. */
export function normalizeSettings(settings: AppSettings): AppSettings {
  if ((settings as { app?: unknown }).app !== undefined) return settings;
  return { ...settings, app: null } as AppSettings;
}

/**
 * Starts `app` with settings given as plain objects over the defaults, for tests and embedding:
 * `startOxy(app, { endpoints: { main: { addr: '127.0.0.1:0' } }, egress: { blocked_cidrs: [] } })`.
 */
export function startOxy(
  app: OxyApp<never, never> | OxyApp,
  settings: Record<string, unknown> = {},
  options: StartOptions = {},
): Promise<RunningProxy> {
  return startProxy(app, appSettings(app, [{ source: 'overrides', value: settings }]), options);
}
