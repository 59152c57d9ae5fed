/**
 * The app model: `defineApp` describes an Oxy app (its name, settings, ext state and the hooks
 * its `start` returns), and `bootstrap` runs it as a service: Foundations' CLI and settings,
 * telemetry, the endpoints, and graceful shutdown.
 *
 * Ordering rule, at start-up: settings parsed → telemetry up → `start(settings, restoredState)`
 * → hooks resolved and validated → endpoints listen → "listening" logged per endpoint. Any
 * failure before the endpoints listen exits non-zero with a message naming the settings path.
 */
import type { ExtTypes, WithEndpointSettings } from './context/contexts.ts';
import type { ExtFactories } from './context/ext.ts';
import type { HOOK_METHODS, Hooks } from './hooks/run.ts';
import type { AppSettings, AppSettingsSchemas, OutputOf } from './settings.ts';

/**
 * The type parameter of the hooks an app's `start` returns: its ext types `X` with its
 * per-endpoint settings type (from `settings.endpoint`) attached, so `ctx.endpoint.appSettings`
 * is typed in every hook.
 */
export type AppHookTypes<X extends ExtTypes, S extends AppSettingsSchemas> = WithEndpointSettings<
  X,
  OutputOf<S['endpoint']>
>;

/** What an app is. Pass it to {@link defineApp}. */
export interface AppDefinition<
  X extends ExtTypes,
  S extends AppSettingsSchemas,
  H extends Hooks<AppHookTypes<X, S>> = Hooks<AppHookTypes<X, S>>,
> {
  /** Short machine-friendly name (metric prefix, `--version`). */
  readonly name: string;
  readonly version: string;
  /** One line for `--help` and the top of the generated config. */
  readonly description: string;
  /** The app's own settings: `app` (a section) and `endpoint` (each `endpoints.<name>.app`). */
  readonly settings?: S;
  /**
   * Factories of the app's state, one per context kind; each runs once per context, when it is
   * created. A kind declared in `X` whose type has a required field needs its factory (a
   * compile error otherwise); a kind without one gets an empty object the hooks may fill.
   */
  readonly ext?: ExtFactories<X>;
  /**
   * Runs once at start-up after settings and telemetry, before any endpoint listens. Returns the
   * hooks the app implements (`{}` for a plain forward proxy). `restoredState` is what the
   * previous process's `AppLifecycleHook.stateForRestart` returned, or `null`. Throwing exits
   * the process non-zero.
   */
  start(settings: AppSettings<S>, restoredState: unknown): H | Promise<H>;
}

/** An app, as returned by {@link defineApp}. Run it with `bootstrap(app)`. */
export interface OxyApp<X extends ExtTypes = ExtTypes, S extends AppSettingsSchemas = AppSettingsSchemas> {
  readonly definition: AppDefinition<X, S>;
}

/** The ext kinds of `X` whose type has a required field: those need a factory. */
type RequiredExtKinds<X extends ExtTypes> = {
  [K in keyof X & keyof ExtTypes]-?: Record<never, never> extends NonNullable<X[K]> ? never : K;
}[keyof X & keyof ExtTypes];

/** Requires `ext` factories for the kinds in {@link RequiredExtKinds}; nothing otherwise. */
type ExtRequirement<X extends ExtTypes> = [RequiredExtKinds<X>] extends [never]
  ? unknown
  : { readonly ext: { readonly [K in RequiredExtKinds<X>]: () => X[K] } };

/** Hook method names by group, as types (from `HOOK_METHODS`, the list `resolveHooks` checks). */
type MethodNames = { readonly [G in keyof typeof HOOK_METHODS]: (typeof HOOK_METHODS)[G][number] };

// biome-ignore lint/suspicious/noExplicitAny: any function: a method of a hook object
type AnyFunction = (...args: any[]) => unknown;

/**
 * `H` with every unknown group and every unknown method turned to `never`, so a typo (next to a
 * valid sibling too, where excess-property checks stay silent) does not compile. Non-function
 * fields of hook objects (a class's own data) are left alone, as `resolveHooks` leaves them.
 */
type KnownHooksOnly<H> = {
  [G in keyof H]: G extends keyof MethodNames
    ? {
        [M in keyof H[G]]: M extends MethodNames[G] ? H[G][M] : H[G][M] extends AnyFunction ? never : H[G][M];
      }
    : never;
};

/**
 * The hooks `start` returns, as written: inferred here with no constraint, so that an object
 * that is not `Hooks` at all (only unknown names) is still inferred as itself and checked by
 * {@link HookNameCheck} (inferred against the constraint, it would fall back to `Hooks` unchecked).
 */
interface StartReturns<S extends AppSettingsSchemas, R> {
  start(settings: AppSettings<S>, restoredState: unknown): R | Promise<R>;
}

/** Checks the names of the hooks `start` returns (see {@link KnownHooksOnly}); infers nothing. */
interface HookNameCheck<S extends AppSettingsSchemas, R> {
  start(
    settings: AppSettings<S>,
    restoredState: unknown,
  ): NoInfer<KnownHooksOnly<R>> | Promise<NoInfer<KnownHooksOnly<R>>>;
}

/**
 * Defines an Oxy app. Ext types and settings are inferred from the `ext` factories and the
 * `settings` schemas; ext types may be given explicitly too, `defineApp<{ ingress: Auth }>({ … })`
 * (then a kind with required fields needs its factory, and the hook names are checked at
 * start-up only, since TypeScript infers no type argument when one is given).
 * Hook groups and method names are checked at compile time and again at start-up.
 */
export function defineApp<
  X extends ExtTypes = Record<never, never>,
  S extends AppSettingsSchemas = Record<never, never>,
  H extends Hooks<AppHookTypes<X, S>> = Hooks<AppHookTypes<X, S>>,
  R = H,
>(
  definition: AppDefinition<X, S, H> & ExtRequirement<X> & StartReturns<S, R> & HookNameCheck<S, R>,
): OxyApp<X, S> {
  if (typeof definition?.start !== 'function') throw new TypeError('defineApp: `start` must be a function');
  for (const key of ['name', 'version', 'description'] as const) {
    if (typeof definition[key] !== 'string' || definition[key] === '') {
      throw new TypeError(`defineApp: \`${key}\` must be a non-empty string`);
    }
  }
  return Object.freeze({ definition: definition as AppDefinition<X, S> });
}

/** How long, after a drain's deadline cut what remained, its records may take to be written. */
const CUT_NEWS_MS = 2000;

/**
 * Runs `app` as a service: the command line (`-c`, `--generate`, `--check`, `--restart`, …,
 * and the `ca export` subcommand, which prints the interception CA and exits),
 * settings, telemetry, `start`, the endpoints, and draining on SIGTERM/SIGINT. Resolves when
 * the service has stopped; sets `process.exitCode`.
 */
export async function bootstrap<X extends ExtTypes, S extends AppSettingsSchemas>(
  app: OxyApp<X, S>,
): Promise<void> {
  const { runService } = await import('foundations/cli');
  const { startLifecycle } = await import('foundations/restart');
  const { log } = await import('foundations/telemetry');
  const { buildSettingsSchema } = await import('./settings.ts');
  const { startProxy, normalizeSettings } = await import('./proxy.ts');
  const { checkOxySettings, oxySettingsWarnings } = await import('./settings-check.ts');
  const { isSettingFailure } = await import('./errors.ts');
  const { FND_ERR, FoundationsError } = await import('foundations');
  const def = app.definition;
  const info = { name: def.name, version: def.version, description: def.description };
  const ca = await import('./tunnels/tls-intercept/cli.ts');
  if (ca.isCaCommand(process.argv.slice(2))) {
    // `oxy ca export`: prints the interception CA and exits, without starting the service.
    const schema = buildSettingsSchema(def.settings ?? {}, def.name);
    process.exitCode = await ca.runCaCommand(process.argv.slice(2), { info, settings: schema });
    return;
  }
  await runService({
    info,
    settings: buildSettingsSchema(def.settings ?? {}, def.name),
    // --check, --restart and a start run the same checks (files, ranges, address clashes).
    check: (settings) => checkOxySettings(normalizeSettings(settings as AppSettings)),
    warnings: (settings) => oxySettingsWarnings(normalizeSettings(settings as AppSettings)),
    async main({ settings, telemetry }) {
      const typed = normalizeSettings(settings as AppSettings);
      const sandbox = typed.security.syscall_sandboxing;
      // With the sandbox on, Node starts again (same PID) with io_uring refused before anything
      // is opened: seccomp cannot see what is submitted through a ring (docs/security.md).
      if (sandbox.enabled) (await import('foundations/security')).denyIoUringFromSettings(sandbox);
      // `workers: N > 1` (docs/workers.md): this process supervises N workers, each of which
      // comes back here with a worker role and runs the app below on the shared sockets.
      const workers = await import('foundations/workers');
      const role = workers.workerRole();
      const count = workers.workerCount(typed.workers);
      if (role === null && count > 1) {
        const { runSupervisor } = await import('./workers/supervisor.ts');
        return runSupervisor({ info, settings: typed, count, server: telemetry?.server ?? null });
      }
      let proxy: Awaited<ReturnType<typeof startProxy>> | undefined;
      // Graceful restarts and draining (foundations/restart, docs/restarts.md): endpoints on
      // inherited sockets, the app's state across, and on a restart request or SIGTERM/SIGINT
      // stop accepting, drain for restart.drain_timeout and exit. A worker drains the same way,
      // on SIGTERM or when its supervisor says so; restarts go through the supervisor.
      const lifecycleOptions: Parameters<typeof startLifecycle>[0] = {
        info,
        settings: typed.restart,
        stateForRestart: () => proxy?.runtime.hooks.stateForRestart?.(),
        async drain(deadline, reason) {
          if (proxy === undefined) return;
          // Connection: close on later HTTP/1 responses, GOAWAY on HTTP/2; UDP endpoints read on
          // for their open sessions unless the next process reads their sockets.
          proxy.beginDrain(reason);
          // UDP sessions are no connections the lifecycle sees: wait for them here (they idle
          // out), while the TCP side drains beside them.
          const datagrams = proxy.drainDatagrams(deadline);
          try {
            await proxy.runtime.hooks.handleShutdown?.();
          } catch (e) {
            log.error('handleShutdown failed', { err: e });
          }
          await datagrams;
        },
        forceClose() {
          if (proxy === undefined) return;
          proxy.runtime.cutting = true;
          // A second signal cuts the drain before its datagram wait ends: end the sessions now.
          void proxy.drainDatagrams(0);
          for (const conn of proxy.runtime.connections) {
            conn.closeReason = 'drained';
            // The lifecycle destroys the sockets it tracks next; a raw tcp connection has none.
            if (conn.socket === null) conn.abort?.();
          }
        },
        beforeExit: async () => {
          if (proxy === undefined) return;
          if (proxy.runtime.cutting) await proxy.runtime.settleCut(CUT_NEWS_MS);
          await proxy.runtime.audit.close();
        },
        log: (level, msg, fields) => log[level](msg, fields),
      };
      const worker = role === null ? null : await workers.startWorkerLifecycle(lifecycleOptions, role);
      const lifecycle = worker?.lifecycle ?? startLifecycle(lifecycleOptions);
      try {
        proxy = await startProxy(app, typed, {
          // A worker gets its own state from the supervisor; a single process is worker 0.
          restoredState: worker
            ? (lifecycle.restoredState ?? null)
            : workers.workerState(lifecycle.restoredState, 0),
          listeners: lifecycle.listeners,
        });
        // Every listener is open: from here on the process only needs the syscalls of a Node
        // network service, file writes (audit, restart socket) and child processes (restarts).
        if (sandbox.enabled) {
          const security = await import('foundations/security');
          // A worker never spawns (its supervisor restarts and respawns): no CHILD_PROCESS.
          const lists = worker ? [security.NODE_SERVICE, security.FS_WRITE] : security.DEFAULT_SERVICE_LISTS;
          const report = security.applySandboxFromSettings(sandbox, lists);
          log.info('syscall sandbox on', { ...report });
        }
        await lifecycle.ready();
        const running = proxy;
        worker?.channel.serve(lifecycle, {
          metrics: async () => (await import('foundations/telemetry')).metricsAsJson(),
          state: () => running.runtime.hooks.stateForRestart?.() ?? null,
        });
      } catch (e) {
        lifecycle.failed(e); // the restarter waiting on this start-up learns why it failed
        // A setting is the cause: one line naming the key, exit 2, as --check would have said.
        if (isSettingFailure(e))
          throw new FoundationsError(FND_ERR.SETTINGS, e.message, { userError: true, cause: e });
        throw e;
      }
      // The lifecycle exits the process once drained.
      await lifecycle.drained;
    },
  });
}
