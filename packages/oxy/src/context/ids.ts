/**
 * Process-unique ids for connections, requests and egress connections: a short random prefix
 * per process (so ids from two processes of a restart do not collide in logs) and a counter.
 * Cheap enough for the hot path: one increment and one string concatenation.
 */
import { randomBytes } from 'node:crypto';

const PREFIX = randomBytes(3).toString('hex');
let next = 0;

/** A new id such as `c-3fa9b1-2a`; `kind` is one letter: c(onnection), r(equest), e(gress). */
export function newId(kind: 'c' | 'r' | 'e'): string {
  next++;
  return `${kind}-${PREFIX}-${next.toString(36)}`;
}
