/**
 * How `stateForRestart` maps onto workers. A supervisor's state is every worker's state, by
 * index: `{"foundations.workers":[s0,s1,…]}`. New worker i gets old worker i's state (null when
 * the old instance had fewer workers). A single process (workers: 1) hands over its state as
 * it is, which a supervisor treats as worker 0's; a single process started from a supervisor
 * takes worker 0's. Workers that did not answer hand over null.
 */

const KEY = 'foundations.workers';

/** The supervisor's handover value for the workers' states, in index order. */
export function packWorkerStates(states: readonly unknown[]): unknown {
  return { [KEY]: [...states] };
}

/** The restored state of worker `index` (a single process is index 0) from any handover value. */
export function workerState(restored: unknown, index: number): unknown {
  if (restored !== null && typeof restored === 'object' && KEY in restored) {
    const list = (restored as Record<string, unknown>)[KEY];
    return Array.isArray(list) ? (list[index] ?? null) : null;
  }
  if (restored === undefined) return null;
  return index === 0 ? restored : null;
}
