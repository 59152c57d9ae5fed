/**
 * The supervisor's side: N worker processes accepting on the listening sockets the supervisor
 * holds, each started as the same program with the same command line.
 *
 * Lifecycle of a slot: spawned → `init` sent (its restored state) → `ready` (all its endpoints
 * listen) → serving → exit. An exit that was not asked for is logged and the slot is respawned
 * after a backoff (100 ms doubling to 10 s; reset once a worker has run for 10 s); a respawned
 * worker starts with no restored state. `start()` resolves once every worker is ready, and
 * rejects (killing them all) when one fails, exits or misses `readyTimeoutMs` first. `drain()`
 * tells every worker to drain and waits for them; workers still alive at the deadline (plus a
 * grace) are killed. If the supervisor itself exits, live workers are killed with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { DrainReason, LifecycleLog } from '../restart/lifecycle.ts';
import type { ActiveListener } from '../restart/listeners.ts';
import { MAX_TIMER_MS } from '../settings/units.ts';
import { type FromWorker, type ToWorker, WORKER_ENV, type WorkerRequest } from './role.ts';

/** What `WorkerPool` needs. */
export interface WorkerPoolOptions {
  readonly count: number;
  /** The sockets every worker accepts on (from `Listeners.hold`). */
  readonly listeners: readonly ActiveListener[];
  /** Each worker must report ready within this. */
  readonly readyTimeoutMs: number;
  /** Restored state per worker index (missing: null). */
  readonly states?: readonly unknown[];
  /** The supervisor was started by a graceful restart: its workers' lifecycles say so. Default false. */
  readonly restarted?: boolean;
  readonly log: LifecycleLog;
  /** Environment for workers (default `process.env`); `NOTIFY_SOCKET` is removed. */
  readonly env?: NodeJS.ProcessEnv;
  /** Time a worker gets past the drain deadline before it is killed (default 2 s). */
  readonly killGraceMs?: number;
}

/** One worker slot as `/health` shows it. */
export interface WorkerStatus {
  readonly index: number;
  readonly pid: number | null;
  readonly state: 'starting' | 'ready' | 'down';
  /** Times this slot was respawned after an unexpected exit. */
  readonly restarts: number;
}

/** An answer from one worker to `request()`. */
export type WorkerAnswer =
  | { readonly index: number; readonly value: unknown }
  | { readonly index: number; readonly error: string };

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const HEALTHY_AFTER_MS = 10_000;

interface Slot {
  readonly index: number;
  child: ChildProcess | null;
  state: WorkerStatus['state'];
  restarts: number;
  failures: number;
  startedAt: number;
  timer: NodeJS.Timeout | null;
}

/** The supervisor's workers. */
export class WorkerPool {
  readonly #opts: WorkerPoolOptions;
  readonly #slots: Slot[];
  readonly #pending = new Map<number, (m: FromWorker & { type: 'reply' }) => void>();
  #nextId = 1;
  #draining = false;
  readonly #killAll = (): void => {
    for (const s of this.#slots) if (s.child && s.child.exitCode === null) s.child.kill('SIGKILL');
  };

  constructor(opts: WorkerPoolOptions) {
    if (!Number.isInteger(opts.count) || opts.count < 1)
      throw new FoundationsError(FND_ERR.WORKERS, `workers: expected at least 1, got ${opts.count}`);
    this.#opts = opts;
    this.#slots = Array.from({ length: opts.count }, (_, index) => ({
      index,
      child: null,
      state: 'down' as const,
      restarts: 0,
      failures: 0,
      startedAt: 0,
      timer: null,
    }));
    process.once('exit', this.#killAll);
  }

  /** The workers' pids and states. */
  status(): WorkerStatus[] {
    return this.#slots.map((s) => ({
      index: s.index,
      pid: s.child?.pid ?? null,
      state: s.state,
      restarts: s.restarts,
    }));
  }

  /** Starts every worker; resolves when all are ready. Rejects with the first failure (all killed). */
  async start(): Promise<void> {
    try {
      await Promise.all(this.#slots.map((s) => this.#spawn(s, this.#opts.states?.[s.index] ?? null)));
    } catch (e) {
      this.#draining = true; // no respawns
      this.#killAll();
      throw e;
    }
  }

  /** Asks every ready worker `what`; a worker that does not answer within `timeoutMs` gives an error. */
  request(what: WorkerRequest, timeoutMs = 5000): Promise<WorkerAnswer[]> {
    return Promise.all(
      this.#slots
        .filter((s) => s.state === 'ready')
        .map((s) => {
          const child = s.child as ChildProcess;
          const id = this.#nextId++;
          return new Promise<WorkerAnswer>((resolve) => {
            const timer = setTimeout(() => {
              this.#pending.delete(id);
              resolve({ index: s.index, error: `worker ${s.index} did not answer within ${timeoutMs} ms` });
            }, timeoutMs);
            this.#pending.set(id, (m) => {
              clearTimeout(timer);
              this.#pending.delete(id);
              resolve(
                m.error === undefined
                  ? { index: s.index, value: m.value }
                  : { index: s.index, error: m.error },
              );
            });
            this.#send(child, { type: 'request', id, what });
          });
        }),
    );
  }

  /**
   * Tells every worker still running to cut its drain short (a second signal to the supervisor):
   * each closes and records what remains, flushes, and exits; resolves once all have exited.
   */
  async cut(): Promise<void> {
    await Promise.all(this.#tellRunning({ type: 'cut' }));
  }

  /**
   * Tells every worker to drain, saying why; resolves once all have exited (killed past
   * `deadline` + grace).
   */
  async drain(deadline: number, reason: DrainReason = 'shutdown'): Promise<void> {
    this.#draining = true;
    for (const s of this.#slots) if (s.timer) clearTimeout(s.timer);
    const live = this.#tellRunning({ type: 'drain', reason });
    const grace = this.#opts.killGraceMs ?? 2000;
    const timer = setTimeout(
      () => {
        this.#opts.log('warn', 'workers still running after the drain deadline: killing them');
        this.#killAll();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, deadline - Date.now()) + grace),
    );
    await Promise.all(live);
    clearTimeout(timer);
    process.off('exit', this.#killAll);
  }

  #spawn(slot: Slot, state: unknown): Promise<void> {
    const { listeners } = this.#opts;
    const role = {
      index: slot.index,
      count: this.#opts.count,
      // `systemd` so a worker's listen() keeps the unit's backlog (listeners.ts `backlogFor`).
      listeners: listeners.map((l, i) => ({
        name: l.name,
        addr: l.addr,
        fd: 4 + i,
        ...(l.origin === 'systemd' ? { systemd: true } : {}),
      })),
    };
    const env: NodeJS.ProcessEnv = { ...(this.#opts.env ?? process.env), [WORKER_ENV]: JSON.stringify(role) };
    delete env.NOTIFY_SOCKET; // only the supervisor talks to systemd
    slot.state = 'starting';
    slot.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...listeners.map((l) => l.fd)],
        env,
      });
      slot.child = child;
      let settled = false;
      let reason: string | null = null;
      const settle = (error: string | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error === null) resolve();
        else
          reject(new FoundationsError(FND_ERR.WORKERS, `worker ${slot.index} (pid ${child.pid}): ${error}`));
      };
      const timer = setTimeout(() => {
        settle(`did not report ready within ${this.#opts.readyTimeoutMs} ms`);
        child.kill('SIGKILL');
      }, this.#opts.readyTimeoutMs);
      child.on('error', (e) => settle(`cannot start: ${e.message}`));
      child.on('message', (m: FromWorker) => {
        if (m?.type === 'hello')
          this.#send(child, { type: 'init', state, restarted: this.#opts.restarted === true });
        else if (m?.type === 'ready') {
          slot.state = 'ready';
          this.#opts.log('info', 'worker ready', { worker: slot.index, worker_pid: child.pid });
          settle(null);
        } else if (m?.type === 'failed') {
          reason = m.reason;
          settle(`failed to start: ${m.reason}`);
          child.kill('SIGKILL');
        } else if (m?.type === 'reply') this.#pending.get(m.id)?.(m);
      });
      child.once('exit', (code, signal) => {
        slot.state = 'down';
        const how = signal === null ? `code ${code}` : `signal ${signal}`;
        // A `failed` sent just before exiting may still be in flight: give it a moment.
        setTimeout(() => settle(reason ?? `exited with ${how} before reporting ready`), 100);
        if (this.#draining) return;
        this.#opts.log('error', 'worker exited unexpectedly; respawning', {
          worker: slot.index,
          worker_pid: child.pid,
          exit: how,
        });
        this.#respawn(slot);
      });
    });
  }

  #respawn(slot: Slot): void {
    if (Date.now() - slot.startedAt >= HEALTHY_AFTER_MS) slot.failures = 0;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** slot.failures);
    slot.failures++;
    slot.restarts++;
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (this.#draining) return;
      this.#spawn(slot, null).catch((e: unknown) =>
        this.#opts.log('error', 'respawned worker failed', {
          worker: slot.index,
          error: (e as Error).message,
        }),
      );
    }, delay);
  }

  /** Sends `m` to every worker still running; each one's exit, as a promise. */
  #tellRunning(m: ToWorker): Promise<void>[] {
    const live: Promise<void>[] = [];
    for (const s of this.#slots) {
      const child = s.child;
      if (child === null || child.exitCode !== null || child.signalCode !== null) continue;
      live.push(new Promise((resolve) => child.once('exit', () => resolve())));
      this.#send(child, m);
    }
    return live;
  }

  #send(child: ChildProcess, m: ToWorker): void {
    if (child.connected) child.send(m, undefined, undefined, () => {});
  }
}
