/**
 * Oxy with `workers: N > 1`: the supervisor process. It holds every endpoint's listening socket
 * (inherited from systemd or a restart, or bound here) without accepting on it, owns the restart
 * socket and the telemetry server, and runs N workers, each the same program running the app
 * (`bootstrap` sees its `FOUNDATIONS_WORKER` role) and accepting on the same kernel sockets.
 *
 * Ordering: lifecycle (inherited sockets, restored state) → endpoints held → telemetry routes →
 * workers started, all ready → sandbox → `lifecycle.ready()` (restart socket, READY to the old
 * process and systemd). On a restart or SIGTERM the lifecycle's drain tells every worker to
 * drain and waits for them; then the supervisor exits. A second SIGTERM tells them to cut their
 * drains short (each records and flushes what it closes) and waits for them; a third exits at
 * once, killing them. See docs/workers.md.
 */
import type { ServiceInfo } from 'foundations';
import { type Lifecycle, startLifecycle } from 'foundations/restart';
import { log, METRICS_CONTENT_TYPE, metricsAsJson, type TelemetryServer } from 'foundations/telemetry';
import { packWorkerStates, renderWorkerMetrics, WorkerPool, workerState } from 'foundations/workers';
import { OXY_ERR, OxyError } from '../errors.ts';
import type { AppSettings } from '../settings.ts';

/** What {@link runSupervisor} needs. */
export interface SupervisorOptions {
  readonly info: ServiceInfo;
  readonly settings: AppSettings;
  /** Number of workers (already resolved from `workers: 0`). */
  readonly count: number;
  /** The telemetry server started by the CLI, if enabled: `/metrics` and `/health` are replaced. */
  readonly server: TelemetryServer | null;
}

/** Runs the supervisor until it has drained; throws when the workers cannot start. */
export async function runSupervisor(opts: SupervisorOptions): Promise<void> {
  const { info, settings, count } = opts;
  let pool: WorkerPool | undefined;
  const lifecycle = startLifecycle({
    info,
    settings: settings.restart,
    async stateForRestart() {
      if (pool === undefined) return undefined;
      const states: unknown[] = new Array(count).fill(null);
      for (const a of await pool.request('state')) {
        if ('value' in a) states[a.index] = a.value ?? null;
        else log.warn('worker state not handed over', { worker: a.index, error: a.error });
      }
      return packWorkerStates(states);
    },
    drain: (deadline, reason) => pool?.drain(deadline, reason),
    // A second signal: the workers cut their drains too, and record what they close.
    forceClose: () => pool?.cut(),
    log: (level, msg, fields) => log[level](msg, fields),
  });
  try {
    const held = [];
    for (const [name, ep] of Object.entries(settings.endpoints)) {
      try {
        held.push(await lifecycle.listeners.hold(name, ep.addr));
      } catch (e) {
        throw new OxyError(OXY_ERR.LISTEN, `endpoints.${name}.addr: ${(e as Error).message}`, { cause: e });
      }
    }
    pool = new WorkerPool({
      count,
      listeners: held,
      readyTimeoutMs: settings.restart.ready_timeout,
      states: Array.from({ length: count }, (_, i) => workerState(lifecycle.restoredState, i)),
      restarted: lifecycle.restarted,
      log: (level, msg, fields) => log[level](msg, fields),
    });
    if (opts.server) serveWorkerTelemetry(opts.server, pool, lifecycle);
    log.info('starting workers', { workers: count, endpoints: held.map((h) => h.name) });
    await pool.start();
    const sandbox = settings.security.syscall_sandboxing;
    if (sandbox.enabled) {
      // The supervisor spawns (workers, restarts): the default lists include CHILD_PROCESS.
      const report = (await import('foundations/security')).applySandboxFromSettings(sandbox);
      log.info('syscall sandbox on', { ...report });
    }
    await lifecycle.ready();
  } catch (e) {
    lifecycle.failed(e);
    await pool?.drain(Date.now());
    throw e;
  }
  await lifecycle.drained;
}

/**
 * `/metrics`: every worker's metrics labelled `worker="<i>"` plus the supervisor's own
 * (`worker="supervisor"`). `/health`: 200 while at least one worker is ready, else 503; the
 * body lists each worker's state. A supervisor started by a restart shares the telemetry socket
 * with the previous one, which serves until this one is ready: until then `/health` is 200 (the
 * instance is healthy), not 503 for workers that are still starting.
 */
function serveWorkerTelemetry(server: TelemetryServer, pool: WorkerPool, lifecycle: Lifecycle): void {
  const replace = { replace: true };
  server.addRoute(
    'GET',
    '/metrics',
    async () => {
      const answers = await pool.request('metrics');
      const sources = [{ worker: 'supervisor', metrics: await metricsAsJson() }];
      for (const a of answers) {
        if ('value' in a) sources.push({ worker: String(a.index), metrics: a.value as unknown[] });
        else log.warn('worker metrics missing from /metrics', { worker: a.index, error: a.error });
      }
      return { contentType: METRICS_CONTENT_TYPE, body: await renderWorkerMetrics(sources) };
    },
    replace,
  );
  server.addRoute(
    'GET',
    '/health',
    () => {
      const status = pool.status();
      const ready = status.filter((w) => w.state === 'ready').length;
      const lines = status.map(
        (w) => `worker ${w.index}: ${w.state} pid=${w.pid ?? '-'} restarts=${w.restarts}`,
      );
      if (lifecycle.restarted && lifecycle.phase === 'starting')
        return {
          status: 200,
          body: `ok (restarting: the previous instance serves; ${ready}/${status.length} new workers ready)\n${lines.join('\n')}\n`,
        };
      return {
        status: ready > 0 ? 200 : 503,
        body: `${ready > 0 ? 'ok' : 'no worker ready'} (${ready}/${status.length} workers ready)\n${lines.join('\n')}\n`,
      };
    },
    replace,
  );
}
