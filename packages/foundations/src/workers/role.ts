/**
 * The worker's side: how a process learns it is worker `index` of a supervisor, which
 * descriptors are its endpoints, and the IPC channel back to the supervisor.
 *
 * The supervisor starts each worker as the same program with the same command line, the
 * listening sockets at fds 4…, Node's IPC channel at fd 3, and `FOUNDATIONS_WORKER` naming
 * them: `{"index":0,"count":2,"listeners":[{"name":"main","addr":{…},"fd":4,"systemd":true}]}`
 * (`systemd` only for a socket a systemd unit made). The variable is
 * read once and removed from the environment, like the restart handover's.
 *
 * Messages (JSON over Node's IPC): the worker says `{type:'hello'}` first; supervisor → worker:
 * `{type:'init',state}` in answer (the app's restored state for this worker), then
 * `{type:'request',id,what:'metrics'|'state'}`, `{type:'drain',reason}` (`restart` or
 * `shutdown`: why the supervisor drains), and `{type:'cut'}` when a
 * second signal cuts the supervisor's drain short (the worker cuts its own, records and flushes
 * what it closes, and exits); worker → supervisor: `{type:'ready'}` or `{type:'failed',reason}`
 * once, then `{type:'reply',id,value}` / `{type:'reply',id,error}`.
 */
import { FND_ERR, FoundationsError } from '../errors.ts';
import { HandoverChannel } from '../restart/handover.ts';
import { type InheritedSocket, systemdFlag } from '../restart/inherited.ts';
import { type DrainReason, Lifecycle, type LifecycleOptions } from '../restart/lifecycle.ts';
import { Listeners } from '../restart/listeners.ts';
import type { ListenAddr } from '../settings/net.ts';

/** The environment variable that makes a process a worker. */
export const WORKER_ENV = 'FOUNDATIONS_WORKER';

/** What a worker is told about itself. */
export interface WorkerRole {
  /** 0…count-1, stable across respawns of the same slot. */
  readonly index: number;
  readonly count: number;
  /** The endpoints' listening sockets, shared with every other worker. */
  readonly listeners: readonly InheritedSocket[];
}

/** What a worker can be asked over IPC. */
export type WorkerRequest = 'metrics' | 'state';

/** A message from the supervisor. */
export type ToWorker =
  | { readonly type: 'init'; readonly state: unknown; readonly restarted: boolean }
  | { readonly type: 'request'; readonly id: number; readonly what: WorkerRequest }
  | { readonly type: 'drain'; readonly reason: DrainReason }
  | { readonly type: 'cut' };

/** A message from a worker. */
export type FromWorker =
  | { readonly type: 'hello' }
  | { readonly type: 'ready' }
  | { readonly type: 'failed'; readonly reason: string }
  | { readonly type: 'reply'; readonly id: number; readonly value?: unknown; readonly error?: string };

function roleError(message: string): FoundationsError {
  return new FoundationsError(FND_ERR.WORKERS, `${WORKER_ENV}: ${message}`);
}

function toAddr(v: unknown, where: string): ListenAddr {
  const a = v as Record<string, unknown> | null;
  if (a && a.kind === 'tcp' && typeof a.host === 'string' && typeof a.port === 'number')
    return { kind: 'tcp', host: a.host, port: a.port };
  if (a && a.kind === 'unix' && typeof a.path === 'string') return { kind: 'unix', path: a.path };
  throw roleError(`${where}.addr is not a listen address`);
}

/** Parses the worker variable; null when absent. Throws `FND_ERR_WORKERS` naming the bad field. */
export function parseWorkerEnv(env: NodeJS.ProcessEnv): WorkerRole | null {
  const text = env[WORKER_ENV];
  if (text === undefined || text === '') return null;
  let v: Record<string, unknown> | null;
  try {
    v = JSON.parse(text) as Record<string, unknown> | null;
  } catch {
    throw roleError('not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw roleError('expected an object');
  const { index, count, listeners } = v;
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1)
    throw roleError('count: expected a positive integer');
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= count)
    throw roleError(`index: expected an integer from 0 to ${count - 1}`);
  if (!Array.isArray(listeners)) throw roleError('listeners: expected a list');
  return {
    index,
    count,
    listeners: listeners.map((l: unknown, i): InheritedSocket => {
      const e = l as Record<string, unknown> | null;
      const where = `listeners[${i}]`;
      if (typeof e !== 'object' || e === null) throw roleError(`${where}: expected an object`);
      if (typeof e.name !== 'string') throw roleError(`${where}.name: expected a string`);
      if (typeof e.fd !== 'number' || !Number.isInteger(e.fd) || e.fd < 3 || e.fd > 65535)
        throw roleError(`${where}.fd: expected a descriptor number`);
      const source = systemdFlag(e.systemd, where, roleError) ? 'systemd' : 'handover';
      return { fd: e.fd, name: e.name, addr: toAddr(e.addr, where), source };
    }),
  };
}

let cached: WorkerRole | null | undefined;

/**
 * This process's worker role, or null when it is not a worker (a single process or the
 * supervisor). Parsed on first call; the variable is then removed from `process.env`.
 */
export function workerRole(): WorkerRole | null {
  if (cached !== undefined) return cached;
  cached = parseWorkerEnv(process.env);
  delete process.env[WORKER_ENV];
  return cached;
}

/** True in a worker process; cheap, for code that runs before `workerRole()` (the CLI). */
export function isWorkerProcess(): boolean {
  return cached != null || (cached === undefined && (process.env[WORKER_ENV] ?? '') !== '');
}

/** How a worker answers the supervisor's requests. */
export interface WorkerHandlers {
  readonly metrics: () => unknown | Promise<unknown>;
  readonly state: () => unknown | Promise<unknown>;
}

/**
 * A `drain` or `cut` the supervisor sent before `serve()` (it was told to stop while this worker
 * was starting): kept by a listener installed before `hello` (a `cut` over a `drain`), and
 * handled by `serve()` as if it came then.
 */
interface EarlyWord {
  message: ToWorker | null;
  readonly listener: (m: ToWorker) => void;
}

/** Why the supervisor drains, from its `drain` message (an older supervisor's says nothing). */
function drainReason(m: { readonly reason?: unknown }): DrainReason {
  return m.reason === 'restart' ? 'restart' : 'shutdown';
}

function listenEarly(): EarlyWord {
  const early: EarlyWord = {
    message: null,
    listener: (m) => {
      if (m?.type === 'cut' || (m?.type === 'drain' && early.message?.type !== 'cut')) early.message = m;
    },
  };
  process.on('message', early.listener);
  return early;
}

/**
 * The worker's IPC channel to its supervisor. It plays the part of the restart handover's
 * channel for the worker's `Lifecycle`: the state comes from the supervisor's `init`
 * message, and `ready`/`failed` go back to it.
 */
export class WorkerChannel extends HandoverChannel {
  readonly #state: unknown;
  readonly #restarted: boolean;
  readonly #early: EarlyWord | null;
  #reported = false;

  /** Use `WorkerChannel.connect()`. */
  constructor(state: unknown, restarted: boolean, early: EarlyWord | null = null) {
    super(-1);
    this.#state = state;
    this.#restarted = restarted;
    this.#early = early;
  }

  /** Whether the supervisor was started by a graceful restart (a worker always gets a channel). */
  override get restarted(): boolean {
    return this.#restarted;
  }

  /** Waits for the supervisor's `init` message (up to `timeoutMs`) and returns the channel. */
  static connect(timeoutMs = 30_000): Promise<WorkerChannel> {
    if (typeof process.send !== 'function') {
      return Promise.reject(roleError('this worker has no IPC channel to its supervisor'));
    }
    return new Promise((resolve, reject) => {
      // A supervisor that is stopped while this worker starts says `drain` (or `cut`) now: a
      // message nobody listens for is lost, and the worker would then serve until it is killed.
      const early = listenEarly();
      const timer = setTimeout(() => {
        process.off('message', onMessage);
        process.off('message', early.listener);
        reject(roleError('no init message from the supervisor'));
      }, timeoutMs);
      const onMessage = (m: ToWorker): void => {
        if (m?.type !== 'init') return;
        clearTimeout(timer);
        process.off('message', onMessage);
        resolve(new WorkerChannel(m.state, m.restarted === true, early));
      };
      process.on('message', onMessage);
      // Asked for, not pushed at spawn: a worker that re-executes itself early (the sandbox's
      // io_uring denial) would lose a message its first image had already read.
      process.send?.({ type: 'hello' } satisfies FromWorker, undefined, undefined, () => {});
    });
  }

  override readState(): unknown {
    return this.#state;
  }

  override reportReady(): void {
    this.#send({ type: 'ready' });
  }

  override reportFailed(reason: string): void {
    this.#send({ type: 'failed', reason });
  }

  override get open(): boolean {
    return !this.#reported;
  }

  /**
   * Answers the supervisor's requests and drains `lifecycle` when told to, or when the
   * supervisor goes away (so a worker never outlives it for longer than a drain). A `drain` or
   * `cut` that came while the worker was starting is carried out now.
   */
  serve(lifecycle: Lifecycle, handlers: WorkerHandlers): void {
    const onMessage = (m: ToWorker): void => {
      if (m?.type === 'drain') void lifecycle.shutdown(drainReason(m));
      else if (m?.type === 'cut') lifecycle.cut(128 + 15);
      else if (m?.type === 'request') void this.#answer(m.id, handlers[m.what]);
    };
    process.on('message', onMessage);
    process.on('disconnect', () => void lifecycle.shutdown());
    process.channel?.unref(); // the endpoints keep the process alive, not the channel
    if (this.#early !== null) {
      process.off('message', this.#early.listener);
      if (this.#early.message !== null) onMessage(this.#early.message);
    }
    if (!process.connected) void lifecycle.shutdown(); // the supervisor went away meanwhile
  }

  async #answer(id: number, handler: (() => unknown) | undefined): Promise<void> {
    let reply: FromWorker;
    try {
      if (handler === undefined) throw new Error('unknown request');
      reply = { type: 'reply', id, value: await handler() };
    } catch (e) {
      reply = { type: 'reply', id, error: (e as Error).message };
    }
    if (process.connected) process.send?.(reply, undefined, undefined, () => {});
  }

  #send(m: FromWorker): void {
    if (this.#reported) return;
    this.#reported = true;
    if (process.connected) process.send?.(m, undefined, undefined, () => {});
  }
}

/**
 * A worker's lifecycle: the same `Lifecycle` as a single process (endpoints, draining on
 * SIGTERM or on the supervisor's word, `drain_timeout`), on the sockets the supervisor passed,
 * with the restart socket off (restarts go through the supervisor) and the restored state the
 * supervisor picked for this worker. Call `channel.serve(lifecycle, handlers)` once ready.
 */
export async function startWorkerLifecycle(
  opts: LifecycleOptions,
  role: WorkerRole,
): Promise<{ lifecycle: Lifecycle; channel: WorkerChannel }> {
  const channel = await WorkerChannel.connect();
  const settings = { ...opts.settings, enabled: false };
  const lifecycle = new Lifecycle({ ...opts, settings }, new Listeners(role.listeners), channel);
  return { lifecycle, channel };
}
