/**
 * Foundations workers: one process per core sharing the listening sockets. A supervisor holds
 * the sockets (`Listeners.hold`), the restart socket and the telemetry server, and runs a
 * `WorkerPool`; each worker finds its role with `workerRole()` and talks back over a
 * `WorkerChannel`. See docs/workers.md.
 */
export { renderWorkerMetrics } from './metrics.ts';
export { type WorkerAnswer, WorkerPool, type WorkerPoolOptions, type WorkerStatus } from './pool.ts';
export {
  type FromWorker,
  isWorkerProcess,
  parseWorkerEnv,
  startWorkerLifecycle,
  type ToWorker,
  WORKER_ENV,
  WorkerChannel,
  type WorkerHandlers,
  type WorkerRequest,
  type WorkerRole,
  workerRole,
} from './role.ts';
export { WorkersSetting, workerCount } from './settings.ts';
export { packWorkerStates, workerState } from './state.ts';
