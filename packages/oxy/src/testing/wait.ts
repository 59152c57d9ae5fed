/**
 * Waiting for a condition that some event loop turns from now comes true (a counter reaching
 * a value, a close hook having fired), with a message that names what never happened.
 */

/**
 * Polls `cond` every 20 ms until it returns true; rejects after `timeoutMs` (default 3000)
 * with `timed out waiting for <what>`.
 */
export async function waitUntil(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
