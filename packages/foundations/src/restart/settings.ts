/**
 * The `restart` settings section. A service puts it in its schema under the key `restart`;
 * the running instance and the restarter (`--restart -c FILE`) read the same file, which
 * is how the restarter finds the socket.
 *
 * The default socket path is empty, meaning "derived" (socket-path.ts): per user (under
 * $XDG_RUNTIME_DIR, /run for root, else a private 0700 directory in tmpdir) and per instance
 * (service name plus a hash of the -c files' paths), so two instances on one host never
 * collide. The CLI resolves it before the service or the restarter runs. The restarter still
 * checks that the socket file is owned by its own user before trusting it; production units
 * may point it at `/run/<service>/restart.sock` (RuntimeDirectory=), as the sample unit does.
 */
import { type Infer, s } from '../settings/index.ts';

/** Builds the `restart` section with a default socket path derived from the service name. */
export function restartSettings(serviceName: string) {
  return s.enabled(
    'Graceful restarts: `--restart -c FILE` asks the running instance to start a new version of itself on the same sockets.',
    true,
    {
      socket: s.path(
        'Restart coordination Unix socket (created with mode 0600: only this user may trigger a restart). Empty: ' +
          `per user and per instance, $XDG_RUNTIME_DIR/${serviceName}-restart[-HASH].sock (/run/... for root, else ` +
          '<tmpdir>/foundations-<uid>/...), HASH from the -c files, so two instances never collide.',
        '',
      ),
      drain_timeout: s.duration(
        'After a restart or SIGTERM, how long the old process lets connections and tunnels finish before closing them.',
        '30s',
      ),
      ready_timeout: s.duration(
        'How long the new process has to report ready before the restart is abandoned and it is killed.',
        '60s',
      ),
    },
    'Listen on the restart socket; when off, restarts are refused and only SIGTERM/SIGINT draining remains.',
  );
}

/** The `restart` section of a service named `foundations` (derived default socket). */
export const RestartSettings = restartSettings('foundations');

/** Parsed `restart` settings (durations in milliseconds). */
export type RestartSettings = Infer<typeof RestartSettings>;
