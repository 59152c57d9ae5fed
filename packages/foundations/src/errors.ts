/**
 * One error class for Foundations, with stable codes (the fastify habit): callers branch on
 * `code`, never on message text. A `Symbol.for` brand lets `isFoundationsError` work across
 * copies of the package.
 */

const BRAND = Symbol.for('foundations.error');

/** Stable error codes. Add new ones here, never reuse or rename. */
export const FND_ERR = {
  /** A settings file or value is invalid; the message names the key path and the file. */
  SETTINGS: 'FND_ERR_SETTINGS',
  /** A command-line argument is invalid. */
  CLI: 'FND_ERR_CLI',
  /** A telemetry subsystem failed to start. */
  TELEMETRY: 'FND_ERR_TELEMETRY',
  /** The syscall sandbox could not be installed. */
  SECCOMP: 'FND_ERR_SECCOMP',
  /** A graceful restart failed or was refused. */
  RESTART: 'FND_ERR_RESTART',
  /** A listening socket could not be inherited or opened. */
  LISTEN: 'FND_ERR_LISTEN',
  /** A worker process could not start, or the worker environment is malformed. */
  WORKERS: 'FND_ERR_WORKERS',
} as const;

export type FoundationsErrorCode = (typeof FND_ERR)[keyof typeof FND_ERR];

/** An error raised by Foundations. `userError` marks mistakes a user can fix (no stack trace). */
export class FoundationsError extends Error {
  readonly code: FoundationsErrorCode;
  readonly userError: boolean;
  readonly [BRAND] = true;

  constructor(
    code: FoundationsErrorCode,
    message: string,
    options?: { cause?: unknown; userError?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FoundationsError';
    this.code = code;
    this.userError = options?.userError ?? false;
  }
}

/** True for any `FoundationsError`, even from another copy of this package. */
export function isFoundationsError(e: unknown): e is FoundationsError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
}
