/**
 * The app model: `defineApp` describes an Oxy app (its name, settings, ext state and the hooks
 * its `start` returns), and `bootstrap` runs it as a service: Foundations' CLI and settings,
 * telemetry, the endpoints, and graceful shutdown.
 *
 * Ordering rule, at start-up: settings parsed → telemetry up → `start(settings, restoredState)`
 * → hooks resolved and validated → endpoints listen → "listening" logged per endpoint. Any
 * failure before the endpoints listen exits non-zero with a message naming the settings path.
 */
import type { ExtTypes } from './context/contexts.ts';
import type { ExtFactories } from './context/ext.ts';
import type { Hooks } from './hooks/run.ts';
import type { AppSettings, AppSettingsSchemas } from './settings.ts';

/** What an app is. Pass it to {@link defineApp}. */
export interface AppDefinition<X extends ExtTypes, S extends AppSettingsSchemas> {
  /** Short machine-friendly name (metric prefix, `--version`). */
  readonly name: string;
  readonly version: string;
  /** One line for `--help` and the top of the generated config. */
  readonly description: string;
  /** The app's own settings: `app` (a section) and `endpoint` (each `endpoints.<name>.app`). */
  readonly settings?: S;
  /** Factories of the app's state, one per context kind; each runs once per context. */
  readonly ext?: ExtFactories<X>;
  /**
   * Runs once at start-up after settings and telemetry, before any endpoint listens. Returns the
   * hooks the app implements (`{}` for a plain forward proxy). `restoredState` is what the
   * previous process's `AppLifecycleHook.stateForRestart` returned, or `null`. Throwing exits
   * the process non-zero.
   */
  start(settings: AppSettings<S>, restoredState: unknown): Hooks<X> | Promise<Hooks<X>>;
}

/** An app, as returned by {@link defineApp}. Run it with `bootstrap(app)`. */
export interface OxyApp<X extends ExtTypes = ExtTypes, S extends AppSettingsSchemas = AppSettingsSchemas> {
  readonly definition: AppDefinition<X, S>;
}

/**
 * Defines an Oxy app. Ext types are inferred from the `ext` factories, or given explicitly:
 * `defineApp<{ ingress: Auth }>({ … })`.
 */
export function defineApp<
  X extends ExtTypes = Record<never, never>,
  S extends AppSettingsSchemas = Record<never, never>,
>(definition: AppDefinition<X, S>): OxyApp<X, S> {
  if (typeof definition?.start !== 'function') throw new TypeError('defineApp: `start` must be a function');
  for (const key of ['name', 'version', 'description'] as const) {
    if (typeof definition[key] !== 'string' || definition[key] === '') {
      throw new TypeError(`defineApp: \`${key}\` must be a non-empty string`);
    }
  }
  return Object.freeze({ definition });
}

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
        async drain() {
          if (proxy === undefined) return;
          proxy.beginDrain(); // Connection: close on later HTTP/1 responses, GOAWAY on HTTP/2
          try {
            await proxy.runtime.hooks.handleShutdown?.();
          } catch (e) {
            log.error('handleShutdown failed', { err: e });
          }
        },
        forceClose() {
          for (const conn of proxy?.runtime.connections ?? []) conn.closeReason = 'drained';
        },
        beforeExit: () => proxy?.runtime.audit.close(),
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
        throw e;
      }
      // The lifecycle exits the process once drained.
      await lifecycle.drained;
    },
  });
}
