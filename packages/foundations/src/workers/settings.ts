/**
 * The `workers` setting: how many processes share a service's listening sockets. A service puts
 * it at the top level of its schema (Oxy does), so `--generate` documents it.
 */
import os from 'node:os';
import { s } from '../settings/index.ts';

/** `workers`: 1 (default) is one process, N > 1 a supervisor and N workers, 0 one worker per core. */
export const WorkersSetting = s.int(
  'Processes accepting connections on the shared listening sockets. 1: one process does everything (no supervisor). ' +
    'N > 1: a supervisor holds the sockets, the restart socket and the telemetry server, and starts N worker ' +
    'processes that all accept on the same kernel sockets (respawned when they die). 0: one worker per CPU core.',
  1,
  { min: 0, max: 1024 },
);

/** The number of workers `setting` asks for: 0 becomes `os.availableParallelism()`. */
export function workerCount(setting: number): number {
  return setting === 0 ? os.availableParallelism() : setting;
}
