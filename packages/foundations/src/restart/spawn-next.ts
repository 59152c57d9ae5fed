/**
 * The old process's end of a restart: start the new version of the program with every
 * listening socket inherited, hand it the app's state, and wait for its verdict.
 *
 * The child is the same program with the same command line (`process.execPath`,
 * `process.execArgv`, `process.argv`), so it re-reads its config from disk; when the restarter
 * named config files (`--restart -c FILE…`), those replace the `-c`/`--config` options. Its stdio
 * slots 3…N are our listening descriptors; the last slot is a socketpair (`'pipe'`), the
 * control channel. `FOUNDATIONS_HANDOVER` tells it which slot is which.
 *
 * Ordering: the state is written before anything is read; the child's first and only
 * message is `ready` or `failed`. Exiting, a spawn error, or the timeout count as failure,
 * and then the child is killed, so a failed restart leaves exactly the old process.
 */
import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import type net from 'node:net';
import type { ActiveDatagram } from './datagrams.ts';
import { encodeFrame, FrameDecoder, MAX_CONTROL_FRAME, toChildReport } from './frames.ts';
import { HANDOVER_ENV } from './inherited.ts';
import type { ActiveListener } from './listeners.ts';

/** The verdict on a new process. */
export type NextOutcome =
  | {
      readonly kind: 'ready';
      readonly pid: number;
      readonly child: ChildProcess;
      /** The `-c` files the child was started with (it loaded them before reporting ready). */
      readonly config: readonly string[];
    }
  | { readonly kind: 'failed'; readonly reason: string };

/** What `startNextProcess` needs. */
export interface NextProcessOptions {
  readonly listeners: readonly ActiveListener[];
  /** UDP sockets to hand on, after the listeners' descriptors. Default none. */
  readonly datagrams?: readonly ActiveDatagram[];
  /** The app's state (JSON-serialisable), delivered to the child's `restoredState`. */
  readonly state: unknown;
  readonly readyTimeoutMs: number;
  /** Aborting kills the child and fails the restart (a shutdown arrived meanwhile). */
  readonly signal?: AbortSignal;
  /** Config files for the child, replacing this process's `-c` options; default: keep them. */
  readonly configFiles?: readonly string[];
  /** Environment for the child; the handover variable is added. Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * The `FOUNDATIONS_HANDOVER` value for a child whose slots 3… hold `listeners`' descriptors, then
 * `datagrams`', then the control channel. `configured`, `transport`, `options`, `systemd` and
 * `fdname` let the child tell whether a socket is still what its settings ask for (matching.ts);
 * older versions read past them.
 */
export function handoverOf(
  listeners: readonly ActiveListener[],
  datagrams: readonly ActiveDatagram[],
): { readonly control: number } & Record<string, unknown> {
  const firstDatagram = 3 + listeners.length;
  return {
    control: firstDatagram + datagrams.length,
    listeners: listeners.map((l, i) => ({
      name: l.name,
      addr: l.addr,
      fd: 3 + i,
      configured: l.configured,
      transport: l.transport,
      // The unit's name for the socket, not the endpoint's: one taken by address must not
      // become one taken by name in the next process (docs/restarts.md, "Socket activation").
      ...(l.origin === 'systemd' ? { systemd: true, fdname: l.systemdName ?? null } : {}),
    })),
    datagrams: datagrams.map((d, i) => ({
      name: d.name,
      host: d.host,
      port: d.port,
      fd: firstDatagram + i,
      ...(d.options === null ? {} : { options: d.options }),
      ...(d.origin === 'systemd' ? { systemd: true } : {}),
    })),
  };
}

/** Starts the new process and resolves when it reports ready, fails, exits or times out. */
export function startNextProcess(opts: NextProcessOptions): Promise<NextOutcome> {
  const datagrams = opts.datagrams ?? [];
  const fds = [...opts.listeners.map((l) => l.fd), ...datagrams.map((d) => d.fd)];
  const handover = handoverOf(opts.listeners, datagrams);
  const stdio: StdioOptions = ['ignore', 'inherit', 'inherit', ...fds, 'pipe'];
  let state: Buffer;
  try {
    state = encodeFrame({ type: 'state', state: opts.state });
  } catch (e) {
    return Promise.resolve({ kind: 'failed', reason: (e as Error).message });
  }

  const args = withConfigFiles(process.argv.slice(1), opts.configFiles);
  const config = configFilesOf(args);
  return new Promise<NextOutcome>((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...process.execArgv, ...args], {
        stdio,
        env: { ...(opts.env ?? process.env), [HANDOVER_ENV]: JSON.stringify(handover) },
      });
    } catch (e) {
      resolve({ kind: 'failed', reason: `cannot start the new process: ${(e as Error).message}` });
      return;
    }
    const control = child.stdio[handover.control] as net.Socket;
    let settled = false;
    const finish = (outcome: NextOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      control.destroy();
      if (outcome.kind === 'failed' && child.exitCode === null && child.signalCode === null)
        child.kill('SIGKILL');
      if (outcome.kind === 'ready') child.unref();
      resolve(outcome);
    };
    const timer = setTimeout(
      () =>
        finish({
          kind: 'failed',
          reason: `new process did not report ready within ${opts.readyTimeoutMs} ms`,
        }),
      opts.readyTimeoutMs,
    );
    const onAbort = (): void =>
      finish({ kind: 'failed', reason: 'restart abandoned: the service is shutting down' });
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.once('error', (e) =>
      finish({ kind: 'failed', reason: `cannot start the new process: ${e.message}` }),
    );
    child.once('exit', (code, sig) => {
      const how = sig === null ? `code ${code}` : `signal ${sig}`;
      // A report written just before exiting may still sit unread in the socketpair: give
      // the control channel a moment so the child's own reason wins over "exited".
      setTimeout(
        () =>
          finish({
            kind: 'failed',
            reason: `new process (pid ${child.pid}) exited with ${how} before reporting ready`,
          }),
        100,
      );
    });
    const decoder = new FrameDecoder(MAX_CONTROL_FRAME);
    control.on('data', (chunk: Buffer) => {
      try {
        for (const m of decoder.push(chunk)) {
          const report = toChildReport(m);
          if (report.type === 'ready') finish({ kind: 'ready', pid: child.pid ?? report.pid, child, config });
          else
            finish({
              kind: 'failed',
              reason: `new process (pid ${child.pid}) failed to start: ${report.reason}`,
            });
        }
      } catch (e) {
        finish({ kind: 'failed', reason: (e as Error).message });
      }
    });
    // The child closing its end without a report is followed by its exit; wait for that.
    control.on('error', () => {});
    control.write(state);
  });
}

/** True for the argument that starts a `-c`/`--config` option, and whether its value is inline. */
function configOption(arg: string): 'separate' | 'inline' | null {
  if (arg === '-c' || arg === '--config') return 'separate';
  if (arg.startsWith('--config=') || (arg.startsWith('-c') && arg.length > 2)) return 'inline';
  return null;
}

/**
 * `args` (the script and its options) with every `-c`/`--config` option replaced by `files`,
 * or unchanged when `files` is undefined. Other options keep their places; the files go last,
 * in the order given (later files win, as on any command line).
 */
export function withConfigFiles(args: readonly string[], files: readonly string[] | undefined): string[] {
  if (files === undefined) return [...args];
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      out.push(...args.slice(i));
      break;
    }
    const kind = configOption(arg);
    if (kind === 'separate') i++;
    else if (kind === null) out.push(arg);
  }
  const end = out.indexOf('--');
  const options = files.flatMap((f) => ['-c', f]);
  if (end < 0) out.push(...options);
  else out.splice(end, 0, ...options);
  return out;
}

/** The `-c`/`--config` values in `args`, in order. */
export function configFilesOf(args: readonly string[]): string[] {
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') break;
    const kind = configOption(arg);
    if (kind === 'separate' && i + 1 < args.length) files.push(args[++i] as string);
    else if (kind === 'inline') files.push(arg.startsWith('--config=') ? arg.slice(9) : arg.slice(2));
  }
  return files;
}
