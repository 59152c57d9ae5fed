/**
 * The `restart` settings section. A service puts it in its schema under the key `restart`;
 * the running instance and the restarter (`--restart -c FILE`) read the same file, which
 * is how the restarter finds the socket.
 *
 * The default socket path is absolute (both sides may run from different directories),
 * per service name (two services on one host do not collide) and under /tmp (writable by
 * an unprivileged user). /tmp is shared, so the restarter checks that the socket file is
 * owned by its own user before trusting it; production units should point it at
 * `/run/<service>/restart.sock` (RuntimeDirectory=), as the sample unit does.
 */
import { type Infer, s } from '../settings/index.ts';

/** Builds the `restart` section with a default socket path derived from the service name. */
export function restartSettings(serviceName: string) {
  return s.enabled(
    'Graceful restarts: `--restart -c FILE` asks the running instance to start a new version of itself on the same sockets.',
    true,
    {
      socket: s.path(
        'Restart coordination Unix socket (created with mode 0600: only this user may trigger a restart).',
        `/tmp/${serviceName}-restart.sock`,
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

/** The `restart` section with the Foundations default socket (`/tmp/foundations-restart.sock`). */
export const RestartSettings = restartSettings('foundations');

/** Parsed `restart` settings (durations in milliseconds). */
export type RestartSettings = Infer<typeof RestartSettings>;
