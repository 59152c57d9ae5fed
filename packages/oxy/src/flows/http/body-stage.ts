/**
 * The body stage: one request or response body, chunk by chunk, through the app's body filter
 * (`HttpBodyHook`, `hooks/http-body.ts`) and the endpoint's size limits (`max_request_body`,
 * `max_response_body`). The HTTP engines (HTTP/1.1, HTTP/2, forwarded, intercepted, tunnelled)
 * move the bytes; this module decides what happens to them, so every engine behaves the same.
 *
 * A body nothing watches gets no stage (`null`): no limit, no filter, no cost. A stage owns the
 * limits, the byte counts a filter is given, and what a filter's failure means: a throw or an
 * unknown return becomes a {@link BodyStopped} with status 500 (`OXY_ERR_HOOK_FAILED`), logged once
 * and counted; the engine answers it before a response head left, or cuts the response after.
 *
 * Ordering rules: the engine calls `write` for each chunk in order and waits for a returned
 * promise before reading more from the sender (backpressure); should it not, the stage chains
 * the calls itself so chunks still reach the filter one at a time, in order. After `end`, a
 * throw, or `abort`, nothing more reaches the filter. A head that declares a length over the
 * limit is refused by the factory itself (it throws {@link BodyStopped}), before anything is
 * sent on. An engine holds a response head back until the stage's first bytes (or its end), so
 * that a stop before them is answered with its status instead of cutting a response that has
 * not really begun (`forward-exchange.ts` does).
 */
import type { RequestState } from '../../context/state.ts';
import { OXY_ERR, OxyError, type OxyErrorCode } from '../../errors.ts';
import type { BodyChunkResult, BodyFilter } from '../../hooks/http-body.ts';
import type { RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';

/** Passes one body, chunk by chunk, through the app's body hooks and the size limits. */
export interface BodyStage {
  /** True when the body may change length: send it chunked (HTTP/1.1) or without content-length (HTTP/2), never with the original Content-Length. */
  readonly rewrites: boolean;
  /** True when no chunk given to `write` is kept past the call (or its promise): the engine may reuse its memory. */
  readonly lent: boolean;
  /** One chunk in; the bytes to send on (null or empty: nothing now). Throws or rejects with BodyStopped to stop the body. */
  write(chunk: Buffer): Buffer | null | Promise<Buffer | null>;
  /** The body ended; the last bytes to send. Throws or rejects with BodyStopped to stop. */
  end(): Buffer | null | Promise<Buffer | null>;
  /** The exchange ended before the body did; nothing more is called. */
  abort(reason: string): void;
}

/**
 * Why a body was stopped: `status` for the client when no response head left yet (request body:
 * answer it; response body after the head: cut the response). An `OxyError` whose `code` says
 * who stopped it: `OXY_ERR_BODY_STOPPED` (the app's filter), `OXY_ERR_BODY_TOO_LARGE` (a limit),
 * `OXY_ERR_HOOK_FAILED` (the filter threw).
 */
export class BodyStopped extends OxyError {
  declare readonly status: number;
  readonly reason: string;
  constructor(
    status: number,
    reason: string,
    code: OxyErrorCode = OXY_ERR.BODY_STOPPED,
    options: { readonly cause?: unknown } = {},
  ) {
    super(code, reason, { status, cause: options.cause, source: 'internal' });
    this.name = 'BodyStopped';
    this.reason = reason;
  }
}

type Direction = 'request' | 'response';

/** What each direction answers when its limit is crossed. */
const TOO_LARGE: Readonly<Record<Direction, { status: number; reason: string }>> = {
  request: { status: 413, reason: 'request body too large' },
  response: { status: 502, reason: 'response body too large' },
};

/** The limit of one direction on the request's endpoint, in bytes (0: none). */
function limitOf(request: RequestState, direction: Direction): number {
  const ep = request.ingress.endpoint.settings;
  if (ep.protocol !== 'http') return 0;
  return direction === 'request' ? ep.max_request_body : ep.max_response_body;
}

/** The declared `content-length` of a head, or -1 when none (or not one number). */
function declaredLength(headers: RequestHead['headers']): number {
  const v = headers['content-length'];
  if (typeof v !== 'string') return -1;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}

function tooLarge(direction: Direction, limit: number): BodyStopped {
  const t = TOO_LARGE[direction];
  return new BodyStopped(t.status, `${t.reason} (over ${limit} bytes)`, OXY_ERR.BODY_TOO_LARGE);
}

/** A failed filter: logged once and counted (`rt.hookFailed`), answered 500 or the response cut. */
function filterFailed(rt: Runtime, hook: string, thrown: unknown): BodyStopped {
  const err = rt.hookFailed(hook, thrown);
  return new BodyStopped(500, 'internal error', OXY_ERR.HOOK_FAILED, { cause: err });
}

/** Asks the app for a filter; a throw, a promise or a non-filter is the hook failing. */
function chooseFilter<H>(
  rt: Runtime,
  name: string,
  hook: ((head: H, ctx: RequestState) => BodyFilter | undefined) | null,
  head: H,
  request: RequestState,
): BodyFilter | undefined {
  if (hook === null) return undefined;
  let filter: BodyFilter | undefined;
  try {
    filter = hook(head, request);
  } catch (e) {
    throw filterFailed(rt, name, e);
  }
  if (filter instanceof Promise) {
    // The choice must be synchronous (the framing depends on it); swallow the late rejection.
    filter.catch(() => {});
    throw filterFailed(rt, name, new Error('returned a promise: choose the filter synchronously'));
  }
  return filter;
}

/**
 * The request body's stage, after handleRequest decided to forward and before the body is sent;
 * null when nothing watches it (then it costs nothing). Throws {@link BodyStopped} when the head
 * declares a body over `max_request_body` (413) or `getRequestBodyFilter` fails (500).
 */
export function requestBodyStage(rt: Runtime, head: RequestHead, request: RequestState): BodyStage | null {
  const limit = limitOf(request, 'request');
  if (limit > 0 && declaredLength(head.headers) > limit) throw tooLarge('request', limit);
  const filter = chooseFilter(
    rt,
    'HttpBodyHook.getRequestBodyFilter',
    rt.hooks.requestBodyFilter,
    head,
    request,
  );
  if (filter === undefined && limit === 0) return null;
  return new FilterStage(rt, 'request', filter ?? null, limit);
}

/**
 * The response body's stage, after handleResponse; null when nothing watches it, or the
 * response has no body (`HEAD`, 1xx, 204, 304). Throws {@link BodyStopped} when the head declares
 * a body over `max_response_body` (502) or `getResponseBodyFilter` fails (500).
 */
export function responseBodyStage(
  rt: Runtime,
  method: string,
  res: ResponseHead,
  request: RequestState,
): BodyStage | null {
  if (method === 'HEAD' || res.status < 200 || res.status === 204 || res.status === 304) return null;
  const limit = limitOf(request, 'response');
  if (limit > 0 && declaredLength(res.headers) > limit) throw tooLarge('response', limit);
  const filter = chooseFilter(
    rt,
    'HttpBodyHook.getResponseBodyFilter',
    rt.hooks.responseBodyFilter,
    res,
    request,
  );
  if (filter === undefined && limit === 0) return null;
  return new FilterStage(rt, 'response', filter ?? null, limit);
}

type Out = Buffer | null;

function isThenable(v: unknown): v is Promise<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** One body through a filter (or none) and a limit (or none). */
class FilterStage implements BodyStage {
  readonly rewrites: boolean;
  readonly lent: boolean;
  readonly #rt: Runtime;
  readonly #direction: Direction;
  readonly #filter: BodyFilter | null;
  readonly #limit: number;
  #bytesIn = 0;
  #bytesOut = 0;
  /** Set once the body ended, stopped, failed or was aborted: the filter sees nothing more. */
  #done = false;
  /** The last call still running a filter promise; later calls wait behind it. */
  #pending: Promise<unknown> | null = null;

  constructor(rt: Runtime, direction: Direction, filter: BodyFilter | null, limit: number) {
    this.#rt = rt;
    this.#direction = direction;
    this.#filter = filter;
    this.#limit = limit;
    this.rewrites = filter?.rewrites === true;
    this.lent = filter === null || filter.onChunk === undefined || filter.chunks === 'lent';
  }

  write(chunk: Buffer): Out | Promise<Out> {
    if (this.#pending !== null) return this.#queue(() => this.write(chunk));
    if (this.#done) return null;
    this.#bytesIn += chunk.length;
    if (this.#limit > 0 && this.#bytesIn > this.#limit) {
      this.abort('too_large');
      throw tooLarge(this.#direction, this.#limit);
    }
    const onChunk = this.#filter?.onChunk;
    if (onChunk === undefined) return this.#pass(chunk);
    return this.#run('BodyFilter.onChunk', () => onChunk.call(this.#filter, chunk), chunk);
  }

  end(): Out | Promise<Out> {
    if (this.#pending !== null) return this.#queue(() => this.end());
    if (this.#done) return null;
    const onEnd = this.#filter?.onEnd;
    if (onEnd === undefined) {
      this.#done = true;
      return null;
    }
    const totals = { bytesIn: this.#bytesIn, bytesOut: this.#bytesOut };
    const out = this.#run('BodyFilter.onEnd', () => onEnd.call(this.#filter, totals), null);
    if (isThenable(out)) return out.finally(() => (this.#done = true));
    this.#done = true;
    return out;
  }

  abort(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    const onAbort = this.#filter?.onAbort;
    if (onAbort === undefined) return;
    try {
      onAbort.call(this.#filter, reason);
    } catch (e) {
      // An event: its failure is logged and counted, and changes nothing.
      this.#rt.hookFailed('BodyFilter.onAbort', e);
    }
  }

  /** Runs after the call in flight, keeping chunks in order for an engine that did not wait. */
  #queue(call: () => Out | Promise<Out>): Promise<Out> {
    return (this.#pending as Promise<unknown>).then(call, call);
  }

  #pass(chunk: Buffer): Buffer {
    this.#bytesOut += chunk.length;
    return chunk;
  }

  /** Calls the filter and turns what it returns (now or later) into the bytes to send. */
  #run(
    hook: string,
    call: () => BodyChunkResult | Promise<BodyChunkResult>,
    chunk: Buffer | null,
  ): Out | Promise<Out> {
    let r: BodyChunkResult | Promise<BodyChunkResult>;
    try {
      r = call();
    } catch (e) {
      throw this.#failed(hook, e);
    }
    if (!isThenable(r)) return this.#result(hook, r, chunk);
    const p = r.then(
      (v) => this.#result(hook, v, chunk),
      (e: unknown) => {
        throw this.#failed(hook, e);
      },
    );
    this.#pending = p;
    const clear = (): void => {
      if (this.#pending === p) this.#pending = null;
    };
    p.then(clear, clear);
    return p;
  }

  #result(hook: string, v: BodyChunkResult, chunk: Buffer | null): Out {
    // Aborted while the filter ran: what it returned has nowhere to go.
    if (this.#done && chunk !== null) return null;
    if (v === undefined || v === chunk) return chunk === null ? null : this.#pass(chunk);
    if (typeof v === 'object' && v !== null && !(v instanceof Uint8Array)) {
      if (v.kind === 'stop' && Number.isInteger(v.status) && v.status >= 400 && v.status <= 599) {
        this.#done = true;
        throw new BodyStopped(v.status, String(v.reason), OXY_ERR.BODY_STOPPED);
      }
      throw this.#failed(hook, invalid('an object that is not BodyVerdict.stop(4xx/5xx status, reason)'));
    }
    if (typeof v !== 'string' && !(v instanceof Uint8Array) && v !== null)
      throw this.#failed(hook, invalid(typeof v));
    if (!this.rewrites) {
      // An observer may add nothing at the end; any other change breaks the promised length.
      if (chunk === null && (v === null || v.length === 0)) return null;
      throw this.#failed(hook, invalid('a change to the body from a filter without `rewrites: true`'));
    }
    if (v === null) return null;
    const out =
      typeof v === 'string'
        ? Buffer.from(v)
        : Buffer.isBuffer(v)
          ? v
          : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    this.#bytesOut += out.length;
    return out;
  }

  /** The filter failed: nothing more reaches it (not even `onAbort`: it is the one that failed). */
  #failed(hook: string, e: unknown): BodyStopped {
    if (e instanceof BodyStopped) return e;
    this.#done = true;
    return filterFailed(this.#rt, hook, e);
  }
}

function invalid(what: string): OxyError {
  return new OxyError(OXY_ERR.INVALID_DECISION, `returned ${what}`, { source: 'internal' });
}
