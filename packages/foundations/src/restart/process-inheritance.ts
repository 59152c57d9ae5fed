/**
 * The process's inherited sockets, read once and shared by everything that listens.
 *
 * Several parts of a service open listening sockets at different times: the telemetry
 * server starts before the app, the app's endpoints after it, the restart socket last.
 * All of them must see the same inherited descriptors (from the previous process or from
 * systemd) and be handed on at the next restart, so the inheritance lives here, parsed on
 * first use, and `startLifecycle()` adopts the same `Listeners`.
 */
import { HandoverChannel } from './handover.ts';
import { parseHandoverEnv, parseSystemdEnv, scrubInheritanceEnv } from './inherited.ts';
import { Listeners } from './listeners.ts';

/** What this process inherited: its listeners and, after a restart, the control channel. */
export interface ProcessInheritance {
  readonly listeners: Listeners;
  /** The channel to the old process; null unless a graceful restart started us. */
  readonly channel: HandoverChannel | null;
}

let cached: ProcessInheritance | undefined;

/**
 * Parses the inheritance variables on first call (and removes them from `process.env`);
 * later calls return the same object. Throws `FND_ERR_LISTEN` on malformed variables.
 */
export function processInheritance(): ProcessInheritance {
  if (cached) return cached;
  const env = process.env;
  const handover = parseHandoverEnv(env);
  const inherited = handover ? handover.listeners : parseSystemdEnv(env);
  scrubInheritanceEnv(env);
  cached = {
    listeners: new Listeners(inherited, undefined, handover?.datagrams ?? []),
    channel: handover ? new HandoverChannel(handover.controlFd) : null,
  };
  return cached;
}

/**
 * The listeners every part of the service should open its sockets through, so that they use
 * inherited sockets and are passed on at a restart (e.g. the telemetry server, untracked).
 */
export function processListeners(): Listeners {
  return processInheritance().listeners;
}
