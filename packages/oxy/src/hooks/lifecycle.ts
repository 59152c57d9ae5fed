/**
 * `AppLifecycleHook`: the app's part in start-up, graceful restarts and shutdown. These fire a
 * handful of times per process, never per connection.
 *
 * Order: `start(settings, restoredState)` (on the app definition) → traffic → on a graceful
 * restart `stateForRestart()` → the new process's `start` receives that value → on shutdown
 * `handleShutdown()` after listeners closed and before connections are drained.
 */

/** Hooks into the app's life. Every method is optional; a missing method does nothing. */
export interface AppLifecycleHook {
  /**
   * Fires once in the old process during a graceful restart, before it drains. The value is
   * serialised as JSON and given to the new process's `start(settings, restoredState)`.
   * Default: no state (`restoredState` is `null`).
   */
  stateForRestart?(): unknown | Promise<unknown>;
  /**
   * Fires once when the process begins to shut down or hand over to a new one, after listeners
   * stopped accepting and before open connections are drained. The return value is ignored;
   * a rejection is logged. Default: nothing.
   */
  handleShutdown?(): void | Promise<void>;
}

/** The method names of {@link AppLifecycleHook}, for validation at registration. */
export const LIFECYCLE_HOOK_METHODS = ['stateForRestart', 'handleShutdown'] as const;
