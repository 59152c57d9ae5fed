/**
 * Where the restart socket lives when `restart.socket` is left empty (the default), and the
 * checks that keep a path someone else controls from stopping start-up or being trusted.
 *
 * The default is per user and per instance, so two instances on one host never collide:
 * - the directory: `$XDG_RUNTIME_DIR` when set (systemd's per-user 0700 directory), `/run` for
 *   root, else `<tmpdir>/foundations-<uid>`, created 0700 and refused unless it is a real
 *   directory owned by this user and closed to others (a shared /tmp is hostile ground);
 * - the name: `<service>-restart.sock`, plus a short hash of the config files' real paths when
 *   there are any, because the files are what tell two instances of one app apart (e.g.
 *   `oxy -c a.yaml` and `oxy -c b.yaml` on different ports). The hash does not cover the files'
 *   contents, so `--restart -c FILE` after an edit still finds its instance. A restarter given
 *   no files looks for the only such socket (`defaultRestartSockets`).
 *
 * Ordering: the CLI resolves the path once, after the settings are parsed and before `main`
 * or the restarter runs; the instance, the restarter and every later generation (started with
 * the same arguments) then compute the same path.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FND_ERR, FoundationsError } from '../errors.ts';

/** What makes one instance of a service unique on a host. */
export interface InstanceIdentity {
  /** The service's name (`info.name`). */
  readonly service: string;
  /** The `-c` files, in the order given (relative to the working directory). */
  readonly configFiles?: readonly string[];
}

/** The environment the default depends on; tests replace it. */
export interface SocketPathEnv {
  readonly uid: number;
  readonly xdgRuntimeDir?: string | undefined;
  readonly tmpdir: string;
}

function processEnv(): SocketPathEnv {
  return {
    uid: process.getuid?.() ?? 0,
    xdgRuntimeDir: process.env.XDG_RUNTIME_DIR,
    tmpdir: os.tmpdir(),
  };
}

/** The file name of the default socket for `id`, e.g. `oxy-restart-3f2a9c1e.sock`. */
export function restartSocketName(id: InstanceIdentity): string {
  const service = serviceStem(id.service);
  const files = (id.configFiles ?? []).map((f) => {
    try {
      return fs.realpathSync(f);
    } catch {
      return path.resolve(f); // Named boundary: a missing file is reported by the settings loader.
    }
  });
  if (files.length === 0) return `${service}-restart.sock`;
  const hash = createHash('sha256')
    .update(JSON.stringify([id.service, files]))
    .digest('hex')
    .slice(0, 8);
  return `${service}-restart-${hash}.sock`;
}

/** `service` as default socket names spell it. */
function serviceStem(service: string): string {
  return service.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40) || 'service';
}

/**
 * The default restart sockets of `service` present in the default directory, sorted: one per
 * instance this user runs with `socket: ""` (and one per instance killed before it could remove
 * its file). For a restarter that was not told which instance: without -c it resolves
 * `<service>-restart.sock`, while an instance started with -c files has a hashed name.
 */
export function defaultRestartSockets(service: string, env: SocketPathEnv = processEnv()): string[] {
  const dir = restartSocketDir(env);
  const stem = serviceStem(service).replace(/\./g, '\\.');
  const ours = new RegExp(`^${stem}-restart(-[0-9a-f]{8})?\\.sock$`);
  return fs
    .readdirSync(dir)
    .filter((n) => ours.test(n))
    .map((n) => path.join(dir, n))
    .filter((p) => fs.lstatSync(p, { throwIfNoEntry: false })?.isSocket() === true)
    .sort();
}

/**
 * The directory for default restart sockets, created when missing. Throws `FND_ERR_RESTART`
 * when a private directory under tmpdir exists but another user owns it or others may enter.
 */
export function restartSocketDir(env: SocketPathEnv = processEnv()): string {
  if (env.xdgRuntimeDir && path.isAbsolute(env.xdgRuntimeDir)) {
    const st = fs.statSync(env.xdgRuntimeDir, { throwIfNoEntry: false });
    if (st?.isDirectory() && st.uid === env.uid) return env.xdgRuntimeDir;
  }
  if (env.uid === 0) return '/run';
  const dir = path.join(env.tmpdir, `foundations-${env.uid}`);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== env.uid || (st.mode & 0o077) !== 0) {
    throw new FoundationsError(
      FND_ERR.RESTART,
      `restart.socket: the default directory ${dir} is not a private directory of uid ${env.uid} ` +
        `(${st.isDirectory() ? `owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}` : 'not a directory'}): ` +
        'remove it, set XDG_RUNTIME_DIR, or set restart.socket to a path of your own',
      { userError: true },
    );
  }
  return dir;
}

/** The default restart socket path for `id` (see the module comment). */
export function defaultRestartSocket(id: InstanceIdentity, env: SocketPathEnv = processEnv()): string {
  return path.join(restartSocketDir(env), restartSocketName(id));
}

/** `socket` as configured, or the per-instance default when it is empty. */
export function resolveRestartSocket(
  socket: string,
  id: InstanceIdentity,
  env: SocketPathEnv = processEnv(),
): string {
  return socket === '' ? defaultRestartSocket(id, env) : path.resolve(socket);
}

/**
 * Returns `settings` with `restart.socket` resolved (when the settings have a `restart`
 * section with a `socket` key); other settings are returned as they are.
 */
export function withResolvedRestartSocket<T>(settings: T, id: InstanceIdentity): T {
  const restart = (settings as { restart?: { socket?: unknown; enabled?: unknown } } | null)?.restart;
  if (restart === undefined || restart === null || typeof restart.socket !== 'string') return settings;
  return { ...settings, restart: { ...restart, socket: resolveRestartSocket(restart.socket, id) } };
}

/**
 * Before binding the restart socket at `socketPath`: refuses, with a message naming
 * `restart.socket`, a file another user owns there (it could be theirs to answer). Our own
 * stale socket is left for the bind to replace.
 */
export function checkRestartSocketOwner(socketPath: string, uid = process.getuid?.() ?? 0): void {
  const st = fs.lstatSync(socketPath, { throwIfNoEntry: false });
  if (!st || uid === 0 || st.uid === uid) return;
  throw new FoundationsError(
    FND_ERR.RESTART,
    `restart.socket: ${socketPath} exists and belongs to uid ${st.uid}, not to this user (uid ${uid}); ` +
      `set restart.socket in the config to a path of your own (e.g. under $XDG_RUNTIME_DIR), or leave it empty ` +
      'for the per-user default',
    { userError: true },
  );
}

/** The error for a restart socket another live instance holds, saying how to set another. */
export function restartSocketInUse(socketPath: string, cause: unknown): FoundationsError {
  return new FoundationsError(
    FND_ERR.RESTART,
    `restart.socket: another running instance listens on ${socketPath}; give this instance its own ` +
      'restart socket: set restart.socket in its config (`restart: { socket: /path/to/other.sock }`), ' +
      'or leave it empty for a default derived from the service name and its -c files',
    { cause, userError: true },
  );
}
