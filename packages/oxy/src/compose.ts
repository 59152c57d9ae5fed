/**
 * `composeApps(a, b, …)`: several apps run as one, each written as if it ran alone. Two
 * things make that work:
 *
 * - **Separate namespaces.** Each app keeps its own `ext` per context kind, its own settings
 *   (`app.<name>` and `endpoints.<ep>.app.<name>`) and its own restart state (`<name>` in the
 *   composed state). Its hooks receive views of the contexts whose `ext` (and
 *   `endpoint.appSettings`) are its own, so two apps may use the same field names.
 * - **One rule for combining answers** (docs/apps.md, "Composition"), applied in the order the
 *   apps are given:
 *   - decisions: the first app that does not let the traffic through wins, and later apps are
 *     not asked (`IngressHook.handleConnection`, `handleProxyConnectRequest` and
 *     `handleRequest`: the first answer other than allow/forward; `EgressHook.handleConnection`:
 *     the first block, else the first answer other than `direct(target)`);
 *   - rewrites: each app gets what the previous one returned (`handleProxyConnectResponse`,
 *     `handleResponse`, `handleUpstreamIps`; a block or an empty list stops there); body
 *     filters are chained the same way, chunk by chunk (`hooks/body-chain.ts`);
 *   - overrides: the first defined answer wins (`getAppTunnelPipeline`, `dnsResolveOverride`,
 *     `tcpConnectOverride`, `selectUpstream`, `udpConnectOverride`);
 *   - the PROXY protocol, datagram and TLS hooks by the same rule ({@link combineL4});
 *   - events: every app's method fires, in order, even when an earlier one threw (the first
 *     error is rethrown afterwards, to be logged as that hook's failure): `handleConnectionClose`,
 *     `handleConnectionEstablished`, `handleRequestEnd`.
 *
 * Each app's hooks are resolved on their own first (`resolveHooks`), so its hook names are
 * checked and its decisions validated before they are combined: an unknown decision from one
 * app fails closed instead of letting the next app's allow through. The composed app implements
 * only the methods some app implements, so fast paths chosen from absent hooks still apply.
 *
 * Ordering rule: `start` runs each app's `start` in order; contexts get one ext slot per app,
 * each filled by that app's factory when the context is created (an app without a factory for
 * that kind gets an empty object when its hooks first read `ext`).
 */
import { s } from 'foundations/settings';
import type { z } from 'zod';
import type { OxyApp } from './app.ts';
import type { SocketAddr } from './context/contexts.ts';
import { eraseExtFactories, eraseHooks } from './context/ext.ts';
import { chainFilters } from './hooks/body-chain.ts';
import type { DatagramVerdict } from './hooks/datagram.ts';
import type { EgressDecision } from './hooks/egress.ts';
import type { BodyFilter } from './hooks/http-body.ts';
import type { ResponseHead } from './hooks/http-request.ts';
import type { IngressDecision } from './hooks/ingress.ts';
import type { IpPacketVerdict } from './hooks/ip.ts';
import { type Hooks, type ResolvedHooks, resolveHooks } from './hooks/run.ts';
import type { AppSettings, AppSettingsSchemas } from './settings.ts';

/** Name, version and description of a composed app; by default the apps' own, joined with `+`. */
export interface ComposeInfo {
  readonly name: string;
  readonly version: string;
  readonly description: string;
}

/** One app inside a composition: its definition and its slot (index) in every context's ext. */
interface Member {
  readonly name: string;
  readonly slot: number;
  readonly app: OxyApp;
  /** The views of contexts this app's hooks were given: one view per context, kept as long as it. */
  readonly views: WeakMap<object, object>;
}

type Slots = (object | undefined)[];
const KINDS = ['endpoint', 'ingress', 'request', 'egress'] as const;

/**
 * Runs `apps` as one app, in the given order, with separate ext, settings and restart state per
 * app and the combination rule of the module comment. App names must be distinct. The first
 * argument may be a {@link ComposeInfo} naming the result.
 */
export function composeApps(...args: [ComposeInfo | OxyApp, ...OxyApp[]]): OxyApp {
  const info = 'definition' in args[0] ? null : args[0];
  const apps = (info === null ? args : args.slice(1)) as OxyApp[];
  if (apps.length === 0) throw new TypeError('composeApps: give at least one app');
  const members: Member[] = apps.map((app, slot) => ({
    name: app.definition.name,
    slot,
    app,
    views: new WeakMap(),
  }));
  const names = new Set(members.map((m) => m.name));
  if (names.size !== members.length) throw new TypeError('composeApps: app names must be distinct');
  const factories = members.map((m) => eraseExtFactories(m.app.definition.ext as object | undefined));
  const ext = Object.fromEntries(
    KINDS.map((kind) => [
      kind,
      (): Slots => factories.map((f) => (f[kind] === null ? undefined : f[kind]())),
    ]),
  );
  const join = (key: 'name' | 'version' | 'description', sep: string) =>
    members.map((m) => m.app.definition[key]).join(sep);
  return {
    definition: {
      name: info?.name ?? join('name', '+'),
      version: info?.version ?? join('version', '+'),
      description: info?.description ?? join('description', '; '),
      settings: composedSchemas(members),
      ext: ext as never,
      async start(settings: AppSettings, restoredState: unknown) {
        const resolved: ResolvedHooks[] = [];
        for (const m of members) {
          const own = settingsFor(settings, m.name);
          const state = (restoredState as Record<string, unknown> | null)?.[m.name] ?? null;
          resolved.push(resolveHooks(eraseHooks(await m.app.definition.start(own as never, state))));
        }
        return combine(members, resolved);
      },
    },
  } as OxyApp;
}

/** The composed settings: each app's `app` and `endpoint` schemas under its name. */
function composedSchemas(members: readonly Member[]): AppSettingsSchemas {
  const part = (key: 'app' | 'endpoint'): z.ZodType | undefined => {
    const fields: Record<string, z.ZodType> = {};
    for (const m of members) {
      const schema = (m.app.definition.settings as AppSettingsSchemas | undefined)?.[key];
      if (schema !== undefined) fields[m.name] = schema;
    }
    if (Object.keys(fields).length === 0) return undefined;
    const where =
      key === 'app' ? 'The settings of each composed app' : "Each composed app's part of this endpoint";
    return s.object(`${where}, by app name.`, fields);
  };
  const app = part('app');
  const endpoint = part('endpoint');
  return { ...(app === undefined ? {} : { app }), ...(endpoint === undefined ? {} : { endpoint }) };
}

/** The settings app `name` sees: its own `app` section and its own part of each endpoint. */
function settingsFor(settings: AppSettings, name: string): AppSettings {
  const endpoints: Record<string, unknown> = {};
  for (const [ep, value] of Object.entries(settings.endpoints)) {
    endpoints[ep] = { ...value, app: ownPart(value.app, name) };
  }
  return { ...settings, app: ownPart(settings.app, name), endpoints } as AppSettings;
}

function ownPart(section: unknown, name: string): unknown {
  return (section as Record<string, unknown> | null)?.[name] ?? null;
}

/**
 * The context `ctx` as app `m` sees it: the same object underneath (reads go through to it),
 * with `ext` the app's own slot, `appSettings` its own part, and parent contexts viewed too.
 */
function viewOf<T>(ctx: T, m: Member): T {
  if (typeof ctx !== 'object' || ctx === null) return ctx;
  const cached = m.views.get(ctx);
  if (cached !== undefined) return cached as T;
  const real = ctx as Record<string, unknown>;
  const view = Object.create(real) as Record<string, unknown>;
  const slots = real.ext as Slots;
  Object.defineProperty(view, 'ext', {
    get: () => {
      slots[m.slot] ??= {};
      return slots[m.slot];
    },
  });
  if ('appSettings' in real)
    Object.defineProperty(view, 'appSettings', { value: ownPart(real.appSettings, m.name) });
  for (const parent of ['endpoint', 'ingress', 'request'] as const) {
    if (parent in real) Object.defineProperty(view, parent, { value: viewOf(real[parent], m) });
  }
  m.views.set(ctx, view);
  return view as T;
}

type Table = ResolvedHooks;
type Fn<K extends keyof Table> = NonNullable<Table[K]>;

/** Each app's method `key` that exists, with the app it belongs to. */
function present<K extends keyof Table>(members: readonly Member[], resolved: readonly Table[], key: K) {
  const out: { m: Member; fn: Fn<K> }[] = [];
  members.forEach((m, i) => {
    const fn = resolved[i]?.[key];
    if (fn !== null && fn !== undefined) out.push({ m, fn: fn as Fn<K> });
  });
  return out;
}

/**
 * A decision method taking `(arg, ctx)`: each app in order; the first answer whose kind is not
 * `pass` wins and later apps are not asked; when every app passes, the last one's answer.
 */
function firstDecision<A, D extends { readonly kind: string }>(
  calls: readonly { m: Member; fn: (arg: A, ctx: never) => D | Promise<D> }[],
  pass: D['kind'],
): (arg: A, ctx: object) => Promise<D> {
  return async (arg, ctx) => {
    let d: D | undefined;
    for (const { m, fn } of calls) {
      d = await fn(arg, viewOf(ctx as never, m));
      if (d.kind !== pass) return d;
    }
    return d as D;
  };
}

/** Calls every `fn` in order, even after one throws; rethrows the first error. */
function fireAll(calls: readonly (() => unknown)[]): void {
  let first: { e: unknown } | null = null;
  for (const call of calls) {
    try {
      call();
    } catch (e) {
      first ??= { e };
    }
  }
  if (first !== null) throw first.e;
}

async function awaitAll(calls: readonly (() => unknown)[]): Promise<void> {
  let first: { e: unknown } | null = null;
  for (const call of calls) {
    try {
      await call();
    } catch (e) {
      first ??= { e };
    }
  }
  if (first !== null) throw first.e;
}

/** The composed hooks: only methods some app implements, combined by the module's rule. */
function combine(members: readonly Member[], resolved: readonly Table[]): Hooks {
  const all = <K extends keyof Table>(key: K) => present(members, resolved, key);
  const lifecycle: Record<string, unknown> = {};
  const ingress: Record<string, unknown> = {};
  const httpRequest: Record<string, unknown> = {};
  const httpBody: Record<string, unknown> = {};
  const tunnel: Record<string, unknown> = {};
  const egress: Record<string, unknown> = {};

  const states = all('stateForRestart');
  if (states.length > 0) {
    lifecycle.stateForRestart = async () => {
      const out: Record<string, unknown> = {};
      for (const { m, fn } of states) out[m.name] = await fn();
      return out;
    };
  }
  const shutdowns = all('handleShutdown');
  if (shutdowns.length > 0)
    lifecycle.handleShutdown = () =>
      awaitAll(
        shutdowns.map(
          ({ fn }) =>
            () =>
              fn(),
        ),
      );

  const conns = all('ingressConnection');
  if (conns.length > 0) {
    ingress.handleConnection = async (ctx: object): Promise<IngressDecision> => {
      let d: IngressDecision | undefined;
      for (const { m, fn } of conns) {
        d = await fn(viewOf(ctx as never, m));
        if (d.kind !== 'allow') return d;
      }
      return d as IngressDecision;
    };
  }
  const closes = all('ingressConnectionClose');
  if (closes.length > 0) {
    ingress.handleConnectionClose = (stats: never, ctx: object) =>
      fireAll(
        closes.map(
          ({ m, fn }) =>
            () =>
              fn(stats, viewOf(ctx as never, m)),
        ),
      );
  }

  const ends = all('requestEnd');
  if (ends.length > 0) {
    httpRequest.handleRequestEnd = (info: never, ctx: object) =>
      fireAll(
        ends.map(
          ({ m, fn }) =>
            () =>
              fn(info, viewOf(ctx as never, m)),
        ),
      );
  }

  const connectRequests = all('proxyConnectRequest');
  if (connectRequests.length > 0) {
    httpRequest.handleProxyConnectRequest = firstDecision(connectRequests, 'allow');
  }
  const requests = all('request');
  if (requests.length > 0) {
    httpRequest.handleRequest = firstDecision(requests, 'forward');
  }
  for (const [key, method] of [
    ['proxyConnectResponse', 'handleProxyConnectResponse'],
    ['response', 'handleResponse'],
  ] as const) {
    const rewrites = all(key);
    if (rewrites.length === 0) continue;
    httpRequest[method] = async (res: ResponseHead, ctx: object): Promise<ResponseHead> => {
      let head = res;
      for (const { m, fn } of rewrites) head = (await fn(head, viewOf(ctx as never, m))) ?? head;
      return head;
    };
  }

  for (const [key, method] of [
    ['requestBodyFilter', 'getRequestBodyFilter'],
    ['responseBodyFilter', 'getResponseBodyFilter'],
  ] as const) {
    const choosers = all(key);
    if (choosers.length === 0) continue;
    httpBody[method] = (head: never, ctx: object): BodyFilter | undefined => {
      const filters: BodyFilter[] = [];
      for (const { m, fn } of choosers) {
        const f = fn(head, viewOf(ctx as never, m));
        if (f instanceof Promise) throw new Error(`${m.name}: choose the body filter synchronously`);
        if (f !== undefined) filters.push(f);
      }
      return filters.length === 0 ? undefined : chainFilters(filters);
    };
  }

  // Decisions: the first answer other than passThrough wins (intercept, http, block).
  const starts = all('tunnelStart');
  if (starts.length > 0) {
    tunnel.handleTunnelStart = firstDecision(starts, 'passThrough');
  }

  const pipelines = all('appTunnelPipeline');
  if (pipelines.length > 0) {
    tunnel.getAppTunnelPipeline = async (ctx: object, eg: object) => {
      for (const { m, fn } of pipelines) {
        const p = await fn(viewOf(ctx as never, m), viewOf(eg as never, m));
        if (p !== undefined) return p;
      }
      return undefined;
    };
  }

  const egressConns = all('egressConnection');
  if (egressConns.length > 0) {
    egress.handleConnection = async (target: SocketAddr, ctx: object): Promise<EgressDecision> => {
      let chosen: EgressDecision | null = null;
      let last: EgressDecision | undefined;
      for (const { m, fn } of egressConns) {
        last = await fn(target, viewOf(ctx as never, m));
        if (last.kind === 'block') return last;
        const asked =
          last.kind === 'direct' && last.addr.host === target.host && last.addr.port === target.port;
        if (!asked) chosen ??= last;
      }
      return chosen ?? (last as EgressDecision);
    };
  }
  const established = all('egressEstablished');
  if (established.length > 0) {
    egress.handleConnectionEstablished = (upstream: SocketAddr, ctx: object) =>
      fireAll(
        established.map(
          ({ m, fn }) =>
            () =>
              fn(upstream, viewOf(ctx as never, m)),
        ),
      );
  }
  const ipHooks = all('upstreamIps');
  if (ipHooks.length > 0) {
    egress.handleUpstreamIps = async (ips: string[], ctx: object): Promise<string[]> => {
      let list = ips;
      // A block is thrown by the app's checked hook (validate.ts) and passes through as it is.
      for (const { m, fn } of ipHooks) {
        list = await fn(list, viewOf(ctx as never, m));
        if (list.length === 0) break;
      }
      return list;
    };
  }
  for (const [key, method] of [
    ['dnsResolveOverride', 'dnsResolveOverride'],
    ['tcpConnectOverride', 'tcpConnectOverride'],
    ['selectUpstream', 'selectUpstream'],
    ['udpConnectOverride', 'udpConnectOverride'],
  ] as const) {
    const overrides = all(key);
    if (overrides.length === 0) continue;
    egress[method] = async (arg: never, ctx: object) => {
      for (const { m, fn } of overrides) {
        const answer = await fn(arg, viewOf(ctx as never, m));
        if (answer !== undefined) return answer;
      }
      return undefined;
    };
  }

  const { proxyProtocol, datagram, tls } = combineL4(members, resolved);
  const { ipTunnel, ipFlow } = combineIp(members, resolved);
  const groups = {
    lifecycle,
    ingress,
    proxyProtocol,
    httpRequest,
    httpBody,
    tunnel,
    datagram,
    egress,
    tls,
    ipTunnel,
    ipFlow,
  };
  return Object.fromEntries(Object.entries(groups).filter(([, g]) => Object.keys(g).length > 0)) as Hooks;
}

/**
 * The PROXY protocol, datagram and TLS hooks combined by the same rule:
 * `ProxyProtocolHook.handleConnection` and `TlsHook.handleClientIdentity` are decisions (the
 * first answer other than allow / accept wins, later apps are not asked);
 * `TlsHook.selectCertificate` is an override (the first answer other than `default`);
 * `DatagramHook.handleDatagram` runs each app in order on what the previous one let through:
 * the first drop wins, a rewrite is what the next app sees, and one rewrite of the final bytes
 * is reported when any app rewrote. It stays synchronous, as the runner requires.
 */
function combineL4(members: readonly Member[], resolved: readonly Table[]) {
  const all = <K extends keyof Table>(key: K) => present(members, resolved, key);
  const proxyProtocol: Record<string, unknown> = {};
  const datagram: Record<string, unknown> = {};
  const tls: Record<string, unknown> = {};

  const headers = all('proxyProtocolConnection');
  if (headers.length > 0) {
    proxyProtocol.handleConnection = firstDecision(headers, 'allow');
  }

  const looks = all('datagram');
  if (looks.length > 0) {
    datagram.handleDatagram = (
      data: Uint8Array,
      direction: never,
      ctx: object,
    ): DatagramVerdict | undefined => {
      let bytes = data;
      let rewritten = false;
      for (const { m, fn } of looks) {
        const v = fn(bytes, direction, viewOf(ctx as never, m));
        if (v === undefined || v.kind === 'pass') continue;
        if (v.kind === 'rewrite' && v.data instanceof Uint8Array) {
          bytes = v.data;
          rewritten = true;
          continue;
        }
        return v; // a drop, or not a verdict: the runner drops it (failing closed for the latter)
      }
      return rewritten ? { kind: 'rewrite', data: bytes } : undefined;
    };
  }

  const certificates = all('tlsSelectCertificate');
  if (certificates.length > 0) {
    tls.selectCertificate = firstDecision(certificates, 'default');
  }
  const identities = all('tlsClientIdentity');
  if (identities.length > 0) {
    tls.handleClientIdentity = firstDecision(identities, 'accept');
  }
  return { proxyProtocol, datagram, tls };
}

/**
 * The layer-3 hooks combined by the same rule: `handleTunnel` and `handleFlow` are decisions
 * (the first answer other than allow/upgrade wins); `handlePacket` runs each app in order until
 * one drops the packet (a rewrite by any app is reported once, after all); `handleFlowEnd` is an
 * event every app gets.
 */
function combineIp(
  members: readonly Member[],
  resolved: readonly Table[],
): { ipTunnel: Record<string, unknown>; ipFlow: Record<string, unknown> } {
  const all = <K extends keyof Table>(key: K) => present(members, resolved, key);
  const ipTunnel: Record<string, unknown> = {};
  const ipFlow: Record<string, unknown> = {};
  const tunnels = all('ipTunnel');
  if (tunnels.length > 0) {
    ipTunnel.handleTunnel = firstDecision(tunnels, 'allow');
  }
  const flows = all('ipFlow');
  if (flows.length > 0) {
    ipFlow.handleFlow = firstDecision(flows, 'upgrade');
  }
  const packets = all('ipPacket');
  if (packets.length > 0) {
    ipFlow.handlePacket = (packet: Buffer, direction: never, flow: never, ctx: object) => {
      let rewritten: IpPacketVerdict | undefined;
      for (const { m, fn } of packets) {
        const v = fn(packet, direction, flow, viewOf(ctx as never, m));
        if (v === undefined || v.kind === 'pass') continue;
        if (v.kind !== 'rewritten') return v;
        rewritten = v;
      }
      return rewritten;
    };
  }
  const ends = all('ipFlowEnd');
  if (ends.length > 0) {
    ipFlow.handleFlowEnd = (flow: never, info: never, ctx: object) =>
      fireAll(
        ends.map(
          ({ m, fn }) =>
            () =>
              fn(flow, info, viewOf(ctx as never, m)),
        ),
      );
  }
  return { ipTunnel, ipFlow };
}
