/**
 * A service's life from start-up to exit: inherited sockets in, readiness out, graceful
 * restarts on request, draining on restart or SIGTERM/SIGINT.
 *
 * Ordering rules (see docs/restarts.md for the diagram):
 * 1. `startLifecycle()` runs first, before the app's `start()`: it takes the inherited
 *    sockets and, in a process started by a restart, reads the previous process's state.
 * 2. The app opens every endpoint with `lifecycle.listen(name, addr, server)` (UDP ones with
 *    `lifecycle.bindUdp(name, addr)`).
 * 3. `lifecycle.ready()` once they accept: it opens (or inherits) the restart socket, closes
 *    the inherited sockets no endpoint took (an endpoint the new config dropped or moved;
 *    systemd's stay open), tells the old process and systemd, and only from then on accepts
 *    restart requests. No endpoint may be opened after it.
 *    On a start-up error call `lifecycle.failed(err)` and exit non-zero.
 * 4. A restart request starts the next process; on its "ready" this one stops accepting,
 *    calls the app's `drain(deadline)`, waits for connections and tasks until
 *    `restart.drain_timeout`, destroys what remains and exits 0. One restart at a time.
 * 5. SIGTERM/SIGINT drains the same way. A second one cuts the wait short: what remains is
 *    closed as at the deadline (`forceClose`, then destroyed) and `beforeExit` still flushes, so
 *    the cut units keep their records; the exit code is then 128 + the signal's number. A third
 *    exits at once, flushing nothing.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { UdpSocket, UdpSocketOptions } from 'native';
import { FND_ERR, FoundationsError } from '../errors.ts';
import type { ServiceInfo } from '../service-info.ts';
import { formatListenAddr, formatSocketAddr, type ListenAddr } from '../settings/net.ts';
import type { DatagramAddr } from './datagrams.ts';
import { encodeFrame, FrameDecoder, MAX_CONTROL_FRAME, type RestarterMessage, stringList } from './frames.ts';
import type { HandoverChannel } from './handover.ts';
import type { Listeners, ListenOptions } from './listeners.ts';
import { processInheritance } from './process-inheritance.ts';
import { type NotifyState, sdNotify } from './sd-notify.ts';
import type { RestartSettings } from './settings.ts';
import { checkRestartSocketOwner, resolveRestartSocket, restartSocketInUse } from './socket-path.ts';
import { startNextProcess } from './spawn-next.ts';
import { TaskTracker } from './task-tracker.ts';

/** The endpoint name under which the restart socket itself is handed over. */
export const RESTART_SOCKET_NAME = 'foundations.restart';

/** A log sink; defaults to one line per event on stderr. Telemetry's logger fits. */
export type LifecycleLog = (
  level: 'info' | 'warn' | 'error',
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** Why a process drains: a graceful restart handed its work on, or it is shutting down. */
export type DrainReason = 'restart' | 'shutdown';

/** What the app tells the lifecycle. Every callback is optional. */
export interface LifecycleOptions {
  readonly info: ServiceInfo;
  readonly settings: RestartSettings;
  /** Called in the old process when a restart starts; the value (JSON) reaches the new process. */
  readonly stateForRestart?: () => unknown | Promise<unknown>;
  /**
   * Called once draining starts (restart or signal), after listeners stopped accepting: ask
   * keep-alive clients to leave (`Connection: close`, GOAWAY). `deadline` is ms since epoch;
   * everything still open then is destroyed. `reason` says why (a supervisor passes it on to
   * its workers).
   */
  readonly drain?: (deadline: number, reason: DrainReason) => void | Promise<void>;
  /**
   * Called at the drain deadline when connections or tasks remain, or when a second signal cut
   * the drain short, just before the remaining connections are destroyed: end what the app
   * tracks itself, record why (e.g. "drained"). A promise is awaited, at most 5 s (a supervisor
   * waits for its workers to record and exit).
   */
  readonly forceClose?: () => void | Promise<void>;
  readonly log?: LifecycleLog;
  /**
   * Runs after draining, just before the exit: flush what must not be lost (an audit file,
   * telemetry). Bounded by 5 s; errors are logged. Also run when a second signal cut the drain
   * short; not run on a third signal's immediate exit.
   */
  readonly beforeExit?: () => void | Promise<void>;
  /** How the process ends; default `process.exit`. Tests and embedders replace it. */
  readonly exit?: (code: number) => void;
  /** Handle SIGTERM/SIGINT (default true). */
  readonly signals?: boolean;
}

/** Where the lifecycle stands. */
export type LifecyclePhase = 'starting' | 'ready' | 'restarting' | 'draining';

/** The answer to a restart request, as sent to the restarter. */
export type RestartOutcome = Exclude<RestarterMessage, { type: 'restart' }>;

const defaultLog: LifecycleLog = (level, msg, fields) => {
  process.stderr.write(`${level}: ${msg}${fields ? ` ${JSON.stringify(fields)}` : ''}\n`);
};

/** The running service's lifecycle. Create it with `startLifecycle()`. */
export class Lifecycle {
  /** Listening sockets and the connections accepted on them. */
  readonly listeners: Listeners;
  /** The app's own tasks; draining waits for them as for connections. */
  readonly tasks = new TaskTracker();
  /** The state the previous process handed over; `undefined` on a fresh start. */
  readonly restoredState: unknown;
  /** True when this process was started by a graceful restart. */
  readonly restarted: boolean;
  readonly #opts: LifecycleOptions;
  readonly #log: LifecycleLog;
  readonly #channel: HandoverChannel | null;
  readonly #abort = new AbortController();
  #phase: LifecyclePhase = 'starting';
  #signals = 0;
  /** Resolved by a second signal with the exit code it asks for: the drain stops waiting. */
  readonly #cut: PromiseWithResolvers<number> = Promise.withResolvers();
  /** Notifications still being sent; awaited before exiting so none is lost. */
  readonly #notifying = new Set<Promise<unknown>>();
  #drained: PromiseWithResolvers<DrainReason> = Promise.withResolvers();

  /** Use `startLifecycle()`; this constructor takes already parsed inheritance. */
  constructor(opts: LifecycleOptions, listeners: Listeners, channel: HandoverChannel | null) {
    this.#opts = opts;
    this.#log = opts.log ?? defaultLog;
    this.#channel = channel;
    this.listeners = listeners;
    this.restarted = channel?.restarted ?? false;
    this.restoredState = channel?.readState();
    if (opts.signals !== false) {
      process.on('SIGTERM', () => this.#onSignal('SIGTERM', 15));
      process.on('SIGINT', () => this.#onSignal('SIGINT', 2));
    }
  }

  /** Settles when draining has finished (before `beforeExit` and the exit), with why it drained. */
  get drained(): Promise<DrainReason> {
    return this.#drained.promise;
  }

  /** Where the lifecycle stands. */
  get phase(): LifecyclePhase {
    return this.#phase;
  }

  /** Opens an endpoint on an inherited socket if one matches, else a fresh one. See `Listeners.listen`. */
  listen<S extends net.Server>(name: string, addr: ListenAddr, server: S, opts?: ListenOptions): Promise<S> {
    return this.listeners.listen(name, addr, server, opts);
  }

  /** Opens a UDP endpoint on an inherited socket if one matches, else a fresh one. See `DatagramListeners.bind`. */
  bindUdp(name: string, addr: DatagramAddr, opts?: UdpSocketOptions): UdpSocket {
    return this.listeners.datagrams.bind(name, addr, opts);
  }

  /**
   * Declares the service ready: endpoints accept. Opens the restart socket (when enabled),
   * reports "ready" to the process that started us, and notifies systemd.
   */
  async ready(): Promise<void> {
    if (this.#phase !== 'starting') return;
    const { settings } = this.#opts;
    if (settings.enabled) {
      const server = net.createServer((socket) => this.#serveRestarter(socket));
      try {
        // Empty when the service was not started through the CLI (which resolves it first).
        const socketPath = resolveRestartSocket(settings.socket, { service: this.#opts.info.name });
        const addr: ListenAddr = { kind: 'unix', path: socketPath };
        if (!this.restarted) checkRestartSocketOwner(socketPath);
        await this.listeners
          .listen(RESTART_SOCKET_NAME, addr, server, { mode: 0o600, untracked: true })
          .catch((e) => {
            const code = ((e as Error).cause as NodeJS.ErrnoException | undefined)?.code;
            throw code === 'EADDRINUSE' ? restartSocketInUse(socketPath, e) : e;
          });
      } catch (e) {
        this.failed(e);
        throw e;
      }
    }
    this.#closeUnclaimed();
    this.#phase = 'ready';
    this.#channel?.reportReady();
    const n = await sdNotify({ READY: 1, MAINPID: process.pid, STATUS: `${this.#opts.info.name} ready` });
    if (n.kind === 'failed') this.#log('warn', 'sd_notify READY failed', { reason: n.reason });
    this.#log('info', 'ready', { pid: process.pid, restarted: this.restarted });
  }

  /**
   * Closes the handed-over sockets no endpoint took, so clients of an endpoint the new settings
   * dropped or moved are refused once the old process stops accepting, and logs each by name.
   */
  #closeUnclaimed(): void {
    const stream = this.listeners.closeUnclaimed();
    const udp = this.listeners.datagrams.closeUnclaimed();
    for (const s of stream.closed) {
      const addr = s.addr === null ? null : formatListenAddr(s.addr);
      this.#log('info', 'inherited socket matches no endpoint; closed', { name: s.name, addr, fd: s.fd });
    }
    for (const d of udp.closed) {
      const addr = formatSocketAddr(d);
      this.#log('info', 'inherited UDP socket matches no endpoint; closed', { name: d.name, addr, fd: d.fd });
    }
    for (const s of [...stream.kept, ...udp.kept]) {
      // The socket unit holds it too: closing ours would refuse nobody (docs/restarts.md).
      this.#log('warn', 'socket from systemd matches no endpoint; left open', { name: s.name, fd: s.fd });
    }
  }

  /** Reports a start-up failure to the old process (if a restart started us). The caller exits. */
  failed(error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error);
    this.#channel?.reportFailed(reason);
  }

  /**
   * Starts the next process and, when it is ready, drains and exits this one (in the
   * background). Resolves with the answer for the restarter.
   */
  async restart(configFiles?: readonly string[]): Promise<RestartOutcome> {
    const outcome = await this.#handover(configFiles);
    if (outcome.type === 'complete') setImmediate(() => void this.#drainAndExit('restart'));
    return outcome;
  }

  /**
   * Drains and exits, as on SIGTERM. `reason` is only what `drained`, the log and `drain` are
   * told: a worker whose supervisor drains for a restart says `restart`, though it hands
   * nothing over itself (its supervisor does).
   */
  shutdown(reason: DrainReason = 'shutdown'): Promise<void> {
    return this.#drainAndExit('shutdown', reason);
  }

  /**
   * Cuts the drain short, as a second signal does (draining first if it was not): what remains
   * is closed and recorded, `beforeExit` flushes, and the process exits with `code`.
   */
  cut(code: number): void {
    if (this.#phase !== 'draining') void this.#drainAndExit('shutdown');
    this.#cut.resolve(code);
  }

  async #handover(configFiles?: readonly string[]): Promise<RestartOutcome> {
    if (this.#phase === 'restarting') return { type: 'refused', reason: 'a restart is already in progress' };
    if (this.#phase === 'draining') return { type: 'refused', reason: 'this instance is shutting down' };
    if (this.#phase === 'starting') return { type: 'refused', reason: 'this instance is still starting' };
    this.#phase = 'restarting';
    this.#log('info', 'restart requested');
    let state: unknown;
    try {
      state = await this.#opts.stateForRestart?.();
    } catch (e) {
      this.#phase = 'ready';
      return { type: 'failed', reason: `stateForRestart() failed: ${(e as Error).message}` };
    }
    const next = await startNextProcess({
      listeners: this.listeners.active,
      datagrams: this.listeners.datagrams.active,
      state,
      readyTimeoutMs: this.#opts.settings.ready_timeout,
      signal: this.#abort.signal,
      ...(configFiles === undefined ? {} : { configFiles }),
    });
    if (next.kind === 'failed') {
      if (this.#phase === 'restarting') this.#phase = 'ready';
      this.#log('error', 'restart failed; this instance keeps serving', { reason: next.reason });
      return { type: 'failed', reason: next.reason };
    }
    this.#phase = 'draining';
    this.#log('info', 'restart complete; draining', { new_pid: next.pid, config: next.config.join(', ') });
    // Harmless when the new process already said so; needed with NotifyAccess=main.
    this.#notify({ MAINPID: next.pid });
    return { type: 'complete', pid: next.pid, config: next.config };
  }

  #serveRestarter(socket: net.Socket): void {
    const decoder = new FrameDecoder(MAX_CONTROL_FRAME);
    let asked = false;
    socket.on('error', () => {}); // boundary: a restarter that hangs up only loses its answer
    socket.on('data', (chunk: Buffer) => {
      let messages: Array<{ type: string; [key: string]: unknown }>;
      try {
        messages = decoder.push(chunk);
      } catch (e) {
        socket.end(encodeFrame({ type: 'failed', reason: (e as Error).message }));
        return;
      }
      for (const m of messages) {
        if (asked) continue;
        asked = true;
        if (m.type !== 'restart') {
          socket.end(encodeFrame({ type: 'failed', reason: `unknown request "${m.type}"` }));
          return;
        }
        const config = stringList(m.config);
        if (m.config !== undefined && config === undefined) {
          socket.end(encodeFrame({ type: 'failed', reason: '"config" must be a list of file paths' }));
          return;
        }
        void this.#handover(config).then((answer) => {
          socket.end(encodeFrame(answer), () => {
            if (answer.type === 'complete') void this.#drainAndExit('restart');
          });
        });
      }
    });
  }

  #onSignal(name: string, num: number): void {
    this.#signals++;
    if (this.#signals > 2) {
      this.#log('warn', `third ${name}: exiting now`);
      this.#exit(128 + num);
      return;
    }
    if (this.#signals === 2) {
      // Not an exit on the spot: what the drain cuts must still be recorded and flushed.
      this.#log('warn', `second ${name}: cutting the drain short (send again to exit at once)`);
      this.cut(128 + num);
      return;
    }
    this.#log('info', `${name}: shutting down gracefully (send again to cut the drain short)`);
    void this.#drainAndExit('shutdown');
  }

  /** `how` decides what is done (a shutdown abandons a restart); `reason` is what is said. */
  async #drainAndExit(how: DrainReason, reason: DrainReason = how): Promise<void> {
    if (how === 'shutdown') {
      if (this.#phase === 'draining') return; // already on the way out (after a restart)
      this.#abort.abort(); // a restart in progress is abandoned; its child is killed
      this.#notify({ STOPPING: 1 });
    }
    this.#phase = 'draining';
    const timeout = this.#opts.settings.drain_timeout;
    const deadline = Date.now() + timeout;
    // After a restart the next process reads the UDP sockets; on a shutdown nobody else would.
    this.listeners.stopAccepting({ datagrams: how === 'restart' });
    if (how === 'shutdown') this.#removeRestartSocket();
    this.listeners.connections.close();
    this.tasks.close();
    const cut = this.#cut.promise.then(() => 'cut' as const);
    const outcome = await Promise.race([this.#waitDrained(deadline, reason), cut]);
    if (outcome !== 'done') {
      this.#log('warn', `${outcome === 'cut' ? 'drain cut short' : 'drain timeout'}: closing what remains`, {
        connections: this.listeners.connections.size,
        tasks: this.tasks.size,
      });
      await this.#callBounded(this.#opts.forceClose, 'forceClose callback failed');
      this.listeners.destroyConnections();
    }
    this.#log('info', 'drained; exiting', { reason });
    this.#drained.resolve(reason);
    await Promise.all(this.#notifying);
    await this.#callBounded(this.#opts.beforeExit, 'beforeExit failed');
    this.#exit(outcome === 'cut' ? await this.#cut.promise : 0);
  }

  /** Runs the app's `fn` (if any) for at most 5 s; its error is logged as `failed`. */
  async #callBounded(fn: (() => void | Promise<void>) | undefined, failed: string): Promise<void> {
    if (fn === undefined) return;
    const call = Promise.resolve()
      .then(fn)
      .catch((e: unknown) => this.#log('error', failed, { error: (e as Error).message }));
    await Promise.race([call, new Promise((r) => setTimeout(r, 5000).unref())]);
  }

  /** The app's `drain`, then connections and tasks: `done`, or `timeout` at `deadline`. */
  async #waitDrained(deadline: number, reason: DrainReason): Promise<'done' | 'timeout'> {
    try {
      await this.#opts.drain?.(deadline, reason);
    } catch (e) {
      this.#log('error', 'drain callback failed', { error: (e as Error).message });
    }
    const left = (): number => Math.max(0, deadline - Date.now());
    return (await this.listeners.connections.wait(left())) === 'done' ? this.tasks.wait(left()) : 'timeout';
  }

  #removeRestartSocket(): void {
    const own = this.listeners.active.find((l) => l.name === RESTART_SOCKET_NAME);
    if (own?.addr.kind !== 'unix') return;
    // Only the newest process shuts down this way (an old one drains for 'restart').
    try {
      fs.rmSync(own.addr.path, { force: true });
    } catch (e) {
      this.#log('warn', 'cannot remove the restart socket', { error: (e as Error).message });
    }
  }

  #notify(state: NotifyState): void {
    const p = sdNotify(state).then((n) => {
      if (n.kind === 'failed') this.#log('warn', 'sd_notify failed', { reason: n.reason });
    });
    this.#notifying.add(p);
    void p.finally(() => this.#notifying.delete(p));
  }

  #exit(code: number): void {
    (this.#opts.exit ?? process.exit)(code);
  }
}

/**
 * Creates the lifecycle on the process's inheritance (`processInheritance()`: sockets from the
 * restart handover or systemd, shared with e.g. the telemetry server) and, in a process
 * started by a restart, reads the state.
 * Throws `FND_ERR_LISTEN` / `FND_ERR_RESTART` on malformed inheritance.
 */
export function startLifecycle(opts: LifecycleOptions): Lifecycle {
  const { listeners, channel } = processInheritance();
  try {
    return new Lifecycle(opts, listeners, channel);
  } catch (e) {
    channel?.reportFailed((e as Error).message);
    throw e instanceof FoundationsError
      ? e
      : new FoundationsError(FND_ERR.RESTART, (e as Error).message, { cause: e });
  }
}
