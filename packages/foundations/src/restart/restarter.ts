/**
 * Restarter mode (`<service> --restart -c FILE`): ask the running instance for a graceful
 * restart and report the outcome through the exit code, so configuration management can
 * tell a restart that happened from a signal that was merely delivered.
 *
 * The CLI validates FILE before calling `runRestarter`, so an invalid config fails before
 * anything is touched (exit 2, the CLI's usage/config error code). The files given are sent
 * (as absolute paths) for the new process to load instead of the instance's own `-c` files,
 * and the answer names the files the new process loaded.
 *
 * The instance is the one at `restart.socket` as those files give it; by default a socket named
 * after the files themselves (socket-path.ts), so the restarter must name the files the
 * instance was started with. Without files it takes the only default socket of the service
 * (`instanceSocket`); when it finds none, the message names the socket it looked for and the
 * default sockets present.
 */
import fs from 'node:fs';
import net from 'node:net';
import {
  encodeFrame,
  FrameDecoder,
  MAX_CONTROL_FRAME,
  type RestarterMessage,
  toRestarterAnswer,
} from './frames.ts';
import {
  defaultRestartSocket,
  defaultRestartSockets,
  type InstanceIdentity,
  resolveRestartSocket,
} from './socket-path.ts';

/** Exit codes of restarter mode. 2 is the CLI's own code for an invalid config or usage. */
export const RESTARTER_EXIT = {
  /** The new process is ready and serving; the old one is draining. */
  COMPLETE: 0,
  /** The restart failed (the reason is printed); the old instance keeps serving. */
  FAILED: 1,
  /** Invalid config or command line (exit code reserved for the CLI). */
  USAGE: 2,
  /** No instance listens on the restart socket (missing or stale file, or not ours). */
  NO_INSTANCE: 3,
  /** The instance refused: a restart is already in progress, or it is shutting down. */
  REFUSED: 4,
  /** No answer: the instance hung up or did not answer within the timeout. */
  NO_ANSWER: 5,
} as const;

/** Options for `runRestarter`. */
export interface RestarterOptions {
  /** How long to wait for the answer; default 120 s (longer than the default ready_timeout). */
  readonly timeoutMs?: number;
  /**
   * Absolute paths of the config files the new process loads, replacing the instance's own;
   * undefined keeps the files the instance was started with.
   */
  readonly configFiles?: readonly string[];
  /** Where the one-line result goes (default stdout for success, stderr otherwise). */
  readonly print?: (line: string, ok: boolean) => void;
  /**
   * The service and the `-c` files the restarter was given: resolves an empty `restart.socket`
   * to the instance's default (the CLI resolves it first), and when that socket is absent lets
   * the restarter name the default sockets that exist, or, given no files, take the only one.
   */
  readonly identity?: InstanceIdentity;
}

const defaultPrint = (line: string, ok: boolean): void => {
  (ok ? process.stdout : process.stderr).write(`${line}\n`);
};

/** Asks the instance listening on `restart.socket` to restart; resolves with the exit code. */
export async function runRestarter(
  restart: { readonly socket: string },
  opts: RestarterOptions = {},
): Promise<number> {
  const print = opts.print ?? defaultPrint;
  const asked =
    restart.socket === '' && opts.identity ? resolveRestartSocket('', opts.identity) : restart.socket;
  const { socketPath, found } = instanceSocket(asked, opts.identity);
  const st = fs.statSync(socketPath, { throwIfNoEntry: false });
  if (!st) {
    const others = found.length === 0 ? '' : ` (default restart sockets present: ${found.join(', ')})`;
    print(
      `restart: no instance is listening: ${socketPath} does not exist; an instance is found by its ` +
        'restart.socket, which by default is named after the -c files it was started with: give the ' +
        `same -c files, or files that set restart.socket to its socket${others}`,
      false,
    );
    return RESTARTER_EXIT.NO_INSTANCE;
  }
  if (!st.isSocket()) {
    print(`restart: ${socketPath} is not a socket`, false);
    return RESTARTER_EXIT.NO_INSTANCE;
  }
  const uid = process.getuid?.();
  if (uid !== undefined && uid !== 0 && st.uid !== uid) {
    // /tmp is shared: someone else's socket at our path must not be told anything.
    print(
      `restart: ${socketPath} belongs to uid ${st.uid}, not to you (uid ${uid}); refusing to use it`,
      false,
    );
    return RESTARTER_EXIT.NO_INSTANCE;
  }
  const request: RestarterMessage =
    opts.configFiles === undefined ? { type: 'restart' } : { type: 'restart', config: opts.configFiles };
  const answer = await ask(socketPath, request, opts.timeoutMs ?? 120_000);
  switch (answer.type) {
    case 'complete': {
      const loaded = answer.config === undefined ? '' : ` loaded ${describeFiles(answer.config)}`;
      print(`restart complete: new process ${answer.pid}${loaded}`, true);
      return RESTARTER_EXIT.COMPLETE;
    }
    case 'failed':
      print(`restart failed: ${answer.reason}`, false);
      return RESTARTER_EXIT.FAILED;
    case 'refused':
      print(`restart refused: ${answer.reason}`, false);
      return RESTARTER_EXIT.REFUSED;
    case 'no-instance':
      print(`restart: no instance is listening on ${socketPath} (${answer.reason})`, false);
      return RESTARTER_EXIT.NO_INSTANCE;
    case 'no-answer':
      print(`restart: no answer from the instance: ${answer.reason}`, false);
      return RESTARTER_EXIT.NO_ANSWER;
  }
}

/**
 * The socket to ask, and the default sockets present when `asked` is absent. Without -c files
 * the restarter resolves the default of an instance started without any; when that is absent
 * and exactly one default socket of the service exists (an instance started with -c files,
 * whose files the new process then keeps), that one is meant. With -c files, or several
 * sockets, guessing could restart the wrong instance, so the caller reports them instead.
 */
function instanceSocket(
  asked: string,
  id: InstanceIdentity | undefined,
): { socketPath: string; found: readonly string[] } {
  if (id === undefined || fs.existsSync(asked)) return { socketPath: asked, found: [] };
  let found: string[];
  try {
    found = defaultRestartSockets(id.service);
  } catch {
    return { socketPath: asked, found: [] }; // boundary: an unusable default directory holds no instance
  }
  const noFiles = (id.configFiles ?? []).length === 0;
  const [sole] = found;
  if (
    noFiles &&
    found.length === 1 &&
    sole !== undefined &&
    asked === defaultRestartSocket({ service: id.service })
  )
    return { socketPath: sole, found };
  return { socketPath: asked, found };
}

type Answer =
  | Exclude<RestarterMessage, { type: 'restart' }>
  | { readonly type: 'no-instance'; readonly reason: string }
  | { readonly type: 'no-answer'; readonly reason: string };

function describeFiles(files: readonly string[]): string {
  return files.length === 0 ? 'the default settings (no -c file)' : files.join(', ');
}

function ask(socketPath: string, request: RestarterMessage, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    const decoder = new FrameDecoder(MAX_CONTROL_FRAME);
    let connected = false;
    let settled = false;
    const finish = (a: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(a);
    };
    const timer = setTimeout(
      () => finish({ type: 'no-answer', reason: `timed out after ${timeoutMs} ms` }),
      timeoutMs,
    );
    socket.once('connect', () => {
      connected = true;
      socket.write(encodeFrame(request));
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        const [m] = decoder.push(chunk);
        if (m) finish(toRestarterAnswer(m));
      } catch (e) {
        finish({ type: 'no-answer', reason: (e as Error).message });
      }
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      if (!connected) finish({ type: 'no-instance', reason: e.code ?? e.message });
      else finish({ type: 'no-answer', reason: e.code ?? e.message });
    });
    socket.once('close', () => finish({ type: 'no-answer', reason: 'the instance closed the connection' }));
  });
}
