/**
 * `HttpBodyHook`: streaming hooks on request and response bodies. An app observes, rewrites or
 * stops a body chunk by chunk, without the proxy buffering it whole.
 *
 * The hook does not see bodies itself: per request it is asked for a {@link BodyFilter}, and
 * only a body that got one passes through the app (a request whose filter is `undefined` costs
 * nothing beyond that call). This keeps the per-request choice with the app (scan uploads to
 * one host, rewrite HTML responses only) and the per-chunk path free of that choice.
 *
 * Order for a forwarded request: `handleRequest` → `getRequestBodyFilter` → egress hooks →
 * request body chunks through the filter, sent upstream → `handleResponse` →
 * `getResponseBodyFilter` → response body chunks through the filter, sent to the client →
 * `handleRequestEnd`. Chunks arrive in order, one at a time: the next `onChunk` is not called
 * before the previous one's promise settled, and the sender is not read meanwhile
 * (backpressure).
 */
import type { ExtTypes, RequestContext } from '../context/contexts.ts';
import type { RequestHead, ResponseHead } from './http-request.ts';

/** Stop the body: answer `status` with `reason` (or cut the response, once its head left). */
export interface BodyStop {
  readonly kind: 'stop';
  readonly status: number;
  readonly reason: string;
}

/** Constructors of what a {@link BodyFilter} may return besides bytes. */
export const BodyVerdict = {
  /**
   * Stops the body. A request body: the upstream request is aborted and the client answered
   * `status` (default 403) with `reason`. A response body: a `502`-class answer if no response
   * head left yet, otherwise the response is cut (HTTP/1.1 connection closed, HTTP/2 stream
   * reset); the status is what the audit record shows.
   */
  stop: (status = 403, reason = 'blocked'): BodyStop => ({ kind: 'stop', status, reason }),
} as const;

/**
 * What `onChunk` and `onEnd` return:
 * - `undefined` (or nothing: an observer may return `void`): pass the chunk on unchanged
 *   (`onEnd`: nothing to add);
 * - bytes (`Buffer`, `Uint8Array` or a UTF-8 `string`): send these instead (only for a filter
 *   with `rewrites: true`);
 * - `null` or empty bytes: send nothing now (hold or drop it; only with `rewrites: true`);
 * - `BodyVerdict.stop(status, reason)`: stop the body.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: an observer's `onChunk` returns nothing
export type BodyChunkResult = Uint8Array | string | null | undefined | void | BodyStop;

/** Bytes counted by the proxy for one body, given to {@link BodyFilter.onEnd}. */
export interface BodyTotals {
  /** Bytes received from the sender (before the filter). */
  readonly bytesIn: number;
  /** Bytes passed on to the receiver (after the filter), without what `onEnd` adds. */
  readonly bytesOut: number;
}

/**
 * One body's filter, from {@link HttpBodyHook.getRequestBodyFilter} or
 * {@link HttpBodyHook.getResponseBodyFilter}. Each method may be sync or return a promise; a
 * throw or rejection fails the request closed (500 before the response head left, the response
 * cut after), logged once and counted in `hooks_failures_total`.
 */
export interface BodyFilter {
  /**
   * True when the filter may change the body's bytes. Then the body is sent without its
   * original `Content-Length` (chunked on HTTP/1.1, no `content-length` on HTTP/2). False or
   * absent: the filter only observes or stops, and returning bytes fails the request
   * (`OXY_ERR_INVALID_DECISION`), since the length was already promised.
   */
  readonly rewrites?: boolean;
  /**
   * Who owns the chunks given to `onChunk`. `'owned'` (the default): each chunk is the filter's
   * to keep, as long as it likes (hold it, slice it, return it later). `'lent'`: the filter keeps
   * no chunk, nor a view of one (`subarray`), past its `onChunk` call (or the promise it
   * returned); the proxy may then read the next chunk into the same memory, which saves an
   * allocation, and the garbage collection it brings, per chunk: on the native HTTP/1.1 engine,
   * 0.97 s of CPU per GiB of a filtered download against 2.57 owned (docs/bodies.md). Copy
   * (`Buffer.from(chunk)`) what a lent filter keeps.
   */
  readonly chunks?: 'owned' | 'lent';
  /** Each chunk of the body, in order. Default: pass it on. */
  onChunk?(chunk: Buffer): BodyChunkResult | Promise<BodyChunkResult>;
  /** The body ended: bytes to append (rewriting filters), or a stop. Default: nothing. */
  onEnd?(totals: BodyTotals): BodyChunkResult | Promise<BodyChunkResult>;
  /** Event: the exchange ended before the body did (client or upstream left, a limit, a stop). */
  onAbort?(reason: string): void;
}

/** Hooks on HTTP bodies. Every method is optional. */
export interface HttpBodyHook<X extends ExtTypes = ExtTypes> {
  /**
   * Fires once per forwarded request that has a body, after `handleRequest` chose to forward and
   * before any of the body is sent upstream. Return a {@link BodyFilter} to see (and maybe
   * rewrite or stop) this body, or `undefined` to let it through untouched. Synchronous: decide
   * from the head and `ctx` (a filter's own methods may be async). Throwing answers 500.
   * Default: `undefined`.
   */
  getRequestBodyFilter?(head: RequestHead, ctx: RequestContext<X>): BodyFilter | undefined;
  /**
   * Fires once per forwarded response that may have a body (not for `HEAD`, 204, 304), after
   * `handleResponse` and before the response head goes to the client. As above for the
   * response body. Throwing answers 500. Default: `undefined`.
   */
  getResponseBodyFilter?(res: ResponseHead, ctx: RequestContext<X>): BodyFilter | undefined;
}

/** The method names of {@link HttpBodyHook}, for validation at registration. */
export const HTTP_BODY_HOOK_METHODS = ['getRequestBodyFilter', 'getResponseBodyFilter'] as const;

/** Options of {@link wholeBody}. */
export interface WholeBodyOptions {
  /** Largest body collected, in bytes; a longer body is stopped with `overLimitStatus`. */
  readonly limit: number;
  /** The status a body over `limit` is stopped with. Default: 413. */
  readonly overLimitStatus?: number;
  /**
   * The whole body, once it ended. Return `undefined` to send it as it was, bytes to send
   * instead, or `BodyVerdict.stop(...)`.
   */
  readonly onBody: (body: Buffer) => BodyChunkResult | Promise<BodyChunkResult>;
}

/**
 * A filter for apps that want the whole body at once, up to `limit` bytes: it holds the chunks
 * (nothing is sent on meanwhile), gives `onBody` the whole body at the end, and sends what
 * `onBody` returns. A body over the limit is stopped. The held bytes are the app's memory, bounded
 * by `limit` per body in flight: prefer a streaming filter for large bodies.
 */
export function wholeBody(options: WholeBodyOptions): BodyFilter {
  const { limit, onBody } = options;
  const overLimit = options.overLimitStatus ?? 413;
  let chunks: Buffer[] = [];
  let held = 0;
  return {
    rewrites: true,
    onChunk(chunk) {
      held += chunk.length;
      if (held > limit) {
        chunks = [];
        return BodyVerdict.stop(overLimit, `body over ${limit} bytes`);
      }
      chunks.push(chunk);
      return null;
    },
    async onEnd() {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, held);
      chunks = [];
      const r = await onBody(body);
      return r === undefined ? body : r;
    },
    onAbort() {
      chunks = [];
    },
  };
}
