/**
 * The native addon for the stream paths (splice, raw tunnels, offloaded writes), loaded once
 * where it can be: not built, or not Linux, it is null and each caller falls back to Node's own
 * sockets (the JS pump, accepting with net.Socket, writing as usual). Callers check for null
 * before their first use; nothing here throws.
 */

/** The addon's module. */
export type Native = typeof import('native');

let loaded: Native | null;
try {
  loaded = await import('native');
} catch {
  // Named boundary: the addon is optional; null selects the JS paths.
  loaded = null;
}

/** The addon, or null where it cannot load. */
export const native: Native | null = loaded;
