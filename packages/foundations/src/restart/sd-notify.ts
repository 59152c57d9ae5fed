/**
 * `sd_notify`: telling systemd about start-up, restarts and shutdown.
 *
 * When a unit has `Type=notify`, systemd sets `NOTIFY_SOCKET` and waits for `READY=1`.
 * After a graceful restart the new process says `MAINPID=<its pid>` so systemd follows it
 * instead of considering the service dead when the old process exits; on shutdown the
 * service says `STOPPING=1`.
 *
 * The message is a datagram on an `AF_UNIX`/`SOCK_DGRAM` socket, which Node's `dgram`
 * cannot send, so this module runs `systemd-notify`, passing the assignments as they are.
 * `systemd-notify` waits for systemd to process the message (a barrier), which avoids the
 * old race where systemd could not attribute a message from an already exited sender.
 * The sender is `systemd-notify`, not our pid, so units need `NotifyAccess=all` (the
 * sample unit in docs/restarts.md sets it).
 *
 * Notification is best effort: a failure is reported to the caller (who logs it) and never
 * stops the service.
 */
import { execFile } from 'node:child_process';

/** What happened to a notification. */
export type NotifyOutcome =
  | { readonly kind: 'sent' }
  | { readonly kind: 'skipped' } // no NOTIFY_SOCKET: not run by systemd with Type=notify
  | { readonly kind: 'failed'; readonly reason: string };

/** Assignments systemd understands (sd_notify(3)); any other `KEY=VALUE` is passed through. */
export interface NotifyState {
  readonly READY?: 1;
  readonly RELOADING?: 1;
  readonly STOPPING?: 1;
  readonly MAINPID?: number;
  readonly STATUS?: string;
  readonly [key: string]: string | number | undefined;
}

/** Formats assignments as `KEY=VALUE` lines, rejecting newlines that would smuggle in more. */
export function formatNotifyState(state: NotifyState): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(state)) {
    if (value === undefined) continue;
    if (!/^[A-Z_][A-Z0-9_]*$/.test(key)) throw new Error(`sd_notify: invalid variable name "${key}"`);
    const text = String(value);
    if (/[\n\0]/.test(text)) throw new Error(`sd_notify: ${key} contains a newline or NUL`);
    lines.push(`${key}=${text}`);
  }
  return lines;
}

/**
 * Sends `state` to the service manager when `NOTIFY_SOCKET` is set; resolves with the
 * outcome and never rejects.
 */
export function sdNotify(state: NotifyState, env: NodeJS.ProcessEnv = process.env): Promise<NotifyOutcome> {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return Promise.resolve({ kind: 'skipped' });
  let lines: string[];
  try {
    lines = formatNotifyState(state);
  } catch (e) {
    return Promise.resolve({ kind: 'failed', reason: (e as Error).message });
  }
  return new Promise((resolve) => {
    execFile(
      'systemd-notify',
      lines,
      { env: { ...env, NOTIFY_SOCKET: socket }, timeout: 5000 },
      (err, _out, stderr) => {
        if (!err) resolve({ kind: 'sent' });
        else {
          const detail = stderr.trim() || (err as NodeJS.ErrnoException).code || err.message;
          resolve({ kind: 'failed', reason: `systemd-notify: ${detail}` });
        }
      },
    );
  });
}
