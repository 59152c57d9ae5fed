/**
 * The JS half of the native HTTP/1.1 forward engine (src/h1.c, h1-parse.c, h1-js.c): the
 * common subset of forwarded HTTP/1.1 requests parsed, rewritten and relayed in C on the JS
 * thread, with JS called once per loop turn for the policy (`packages/oxy`,
 * `onramps/http1/native-engine.ts`, says what it decides). These are thin typed wrappers; the
 * engine's contract is in src/h1-js.c.
 */
import {
  addon,
  type H1EngineHandle,
  type H1FilterCallback,
  type H1ParsedRequest,
  type H1ParsedResponse,
  type H1RawEvent,
} from './addon.ts';

export type { H1EngineHandle, H1FilterCallback, H1ParsedRequest, H1ParsedResponse, H1RawEvent };

/** Event types (`H1RawEvent[0]`). */
export const H1_EVENT = { route: 1, done: 2, fail: 3, handBack: 4, closed: 5, expire: 6, head: 7 } as const;
/** What a filter callback returns besides bytes: the filter's promise is pending, or it stopped. */
export const H1_FILTER = { pending: 1, stopped: 2 } as const;
/** The choices of {@link h1Filter}; `lend` is added to `observe` or `rewrite` for a filter that keeps no chunk. */
export const H1_FILTER_MODE = { refused: -1, none: 0, observe: 1, rewrite: 2, lend: 4 } as const;
/** Failure kinds (`H1RawEvent[2]` of a `fail` or `done` event). */
export const H1_FAIL = {
  closed: 1,
  timeout: 2,
  badResponse: 3,
  bodyTimeout: 4,
  clientClosed: 5,
  bodyCut: 6,
} as const;
/** Parser results besides a head: more bytes needed, left to the JS engine, malformed response. */
export const H1_PARSE = { incomplete: 0, handBack: -1, bad: -2 } as const;

/** The engine's settings, in milliseconds and bytes. */
export interface H1EngineSettings {
  readonly maxHeaderSize: number;
  readonly maxResponseHeaderSize: number;
  readonly headerTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly responseTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly poolIdleTimeoutMs: number;
  readonly poolMaxIdle: number;
  readonly sweepMs: number;
}

/**
 * Makes an engine on this thread's loop; `onEvents` gets each loop turn's batch, and the number
 * of requests that ended well since the last batch without an event of their own (quiet mode,
 * {@link h1Quiet}; a connection's own count is the `status` of its `closed`, `handBack` or
 * `expire` event).
 */
export function h1Engine(
  s: H1EngineSettings,
  onEvents: (events: H1RawEvent[], quiet: number) => void,
): H1EngineHandle {
  return addon.h1Engine(
    [
      s.maxHeaderSize,
      s.maxResponseHeaderSize,
      s.headerTimeoutMs,
      s.idleTimeoutMs,
      s.responseTimeoutMs,
      s.bodyTimeoutMs,
      s.poolIdleTimeoutMs,
      s.poolMaxIdle,
      s.sweepMs,
    ],
    onEvents,
  );
}

/** Gives the engine a duplicate of client socket `fd` with the bytes already read; false when it cannot take it. */
export function h1Serve(e: H1EngineHandle, fd: number, id: number, bytes: Buffer | null): boolean {
  return addon.h1Serve(e, fd, id, bytes);
}

/** The upstream connection (a duplicate of `fd` is taken) for the request of connection `id` waiting on a route. */
export function h1Adopt(e: H1EngineHandle, id: number, fd: number, upstream: string): boolean {
  return addon.h1Adopt(e, id, fd, upstream);
}

/** Writes JS's answer to a failed request of connection `id`; `close` ends the connection after it. */
export function h1Answer(e: H1EngineHandle, id: number, bytes: Buffer, close: boolean): void {
  addon.h1Answer(e, id, bytes, close);
}

/**
 * Stops serving connection `id` at once (its JS socket went away); no event follows. Returns its
 * quiet requests not yet told (as its `closed` event would have).
 */
export function h1Drop(e: H1EngineHandle, id: number): number {
  return addon.h1Drop(e, id);
}

/**
 * Quiet mode: nothing observes a finished request's record (no request-end hook, no audit, no
 * DEBUG log), so one that ends well, on an upstream connection from the pool, is only counted
 * (see {@link h1Engine}); failures and requests that asked for a route keep their events.
 */
export function h1Quiet(e: H1EngineHandle, on: boolean): void {
  addon.h1Control(e, 2, on);
}

/**
 * From now on each response head with a body is shown to JS first (an `H1_EVENT.head` event
 * with the head's bytes, answered by {@link h1Filter}), and a filtered body's chunks go to `cb`.
 */
export function h1FilterBodies(e: H1EngineHandle, cb: H1FilterCallback): void {
  addon.h1FilterBodies(e, cb);
}

/** JS's choice for the response head of connection `id` (an `H1_FILTER_MODE`). */
export function h1Filter(e: H1EngineHandle, id: number, mode: number): void {
  addon.h1Filter(e, id, mode);
}

/**
 * A filter's promise settled: the bytes to send (null: none), or `stop`. True when the stop is
 * for JS to answer (no response bytes had left: the connection waits for {@link h1Answer}).
 */
export function h1Resume(e: H1EngineHandle, id: number, bytes: Buffer | null, stop: boolean): boolean {
  return addon.h1Resume(e, id, bytes, stop);
}

/** True while connection `id` has a request under way or a response still being written. */
export function h1Busy(e: H1EngineHandle, id: number): boolean {
  return addon.h1Busy(e, id);
}

/** Draining: responses whose head has not left say `Connection: close` (idle connections are the caller's to end). */
export function h1Drain(e: H1EngineHandle): void {
  addon.h1Control(e, 1, true);
}

/**
 * Closes the engine (its idle upstream connections, its timers). Returns the quiet requests not
 * yet told in a batch.
 */
export function h1Close(e: H1EngineHandle): number {
  return addon.h1Control(e, 0, false) ?? 0;
}

/** The native request parser, for tests: a head, or an `H1_PARSE` code. */
export function h1ParseRequest(buf: Buffer, max: number): number | H1ParsedRequest {
  return addon.h1ParseRequest(buf, max);
}

/** The native response parser, for tests: a head (rewritten as relayed), or an `H1_PARSE` code. */
export function h1ParseResponse(
  buf: Buffer,
  max: number,
  bodiless: boolean,
  close: boolean,
): number | H1ParsedResponse {
  return addon.h1ParseResponse(buf, max, bodiless, close);
}

/** The chunked-body tracker, for tests: [bytes of the body, done (1/0), data bytes], or -1. */
export function h1Chunks(buf: Buffer): number | [number, number, number] {
  return addon.h1Chunks(buf);
}
