/**
 * Several body filters as one, for `composeApps`: each chunk goes through the filters in the
 * apps' order, each getting what the previous one passed on (the composition rule for rewrites,
 * docs/apps.md). A stop from any filter stops the body; a filter that holds or drops a chunk
 * (`null`) ends that chunk's way through the chain. At the end, what a filter's `onEnd` adds goes
 * through the filters after it before their own `onEnd`.
 *
 * Ordering rule: one chunk is through the whole chain before the next enters it (the stage
 * awaits each call); `onAbort` reaches every filter.
 */
import type { BodyChunkResult, BodyFilter, BodyTotals } from './http-body.ts';

type Step = Buffer | null | { readonly kind: 'stop'; readonly status: number; readonly reason: string };

function toStep(r: BodyChunkResult, input: Buffer | null): Step {
  if (r === undefined) return input;
  if (r === null) return null;
  if (typeof r === 'string') return Buffer.from(r);
  if (r instanceof Uint8Array)
    return Buffer.isBuffer(r) ? r : Buffer.from(r.buffer, r.byteOffset, r.byteLength);
  return r;
}

function isStop(s: Step): s is Exclude<Step, Buffer | null> {
  return s !== null && !Buffer.isBuffer(s);
}

/** The filters from `from` on, for `input`: the bytes that come out, or a stop. */
async function through(filters: readonly BodyFilter[], from: number, input: Buffer): Promise<Step> {
  let cur: Step = input;
  for (let i = from; i < filters.length; i++) {
    if (cur === null || isStop(cur) || cur.length === 0) return cur;
    const f = filters[i] as BodyFilter;
    if (f.onChunk === undefined) continue;
    cur = toStep(await f.onChunk(cur), cur);
  }
  return cur;
}

/** One filter that runs `filters` in order; `rewrites` when any of them does. */
export function chainFilters(filters: readonly BodyFilter[]): BodyFilter {
  if (filters.length === 1) return filters[0] as BodyFilter;
  let bytesOut = 0;
  const count = (s: Step): Step => {
    if (Buffer.isBuffer(s)) bytesOut += s.length;
    return s;
  };
  return {
    rewrites: filters.some((f) => f.rewrites === true),
    // A chunk is lent to the chain only when no filter of it keeps one.
    chunks: filters.every((f) => f.chunks === 'lent' || f.onChunk === undefined) ? 'lent' : 'owned',
    async onChunk(chunk) {
      return count(await through(filters, 0, chunk)) ?? null;
    },
    async onEnd(totals: BodyTotals) {
      const tail: Buffer[] = [];
      for (let i = 0; i < filters.length; i++) {
        const f = filters[i] as BodyFilter;
        // Each filter's totals: what entered the chain, and what it has passed on so far.
        const added =
          f.onEnd === undefined ? undefined : await f.onEnd({ bytesIn: totals.bytesIn, bytesOut });
        const step = toStep(added, null);
        if (isStop(step)) return step;
        if (step === null || step.length === 0) continue;
        const out = await through(filters, i + 1, step);
        if (isStop(out)) return out;
        if (out !== null) tail.push(out);
      }
      return tail.length === 0 ? null : Buffer.concat(tail);
    },
    onAbort(reason) {
      let first: { e: unknown } | null = null;
      for (const f of filters) {
        try {
          f.onAbort?.(reason);
        } catch (e) {
          first ??= { e };
        }
      }
      if (first !== null) throw first.e;
    },
  };
}
