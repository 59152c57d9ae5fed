/**
 * Response body filters on the native HTTP/1.1 engine (`packages/native/src/h1-body.c`): an app
 * whose only forwarding hook is `HttpBodyHook.getResponseBodyFilter` keeps the native engine,
 * which shows each response head with a body here first and then hands the filter the body's
 * chunks as it reads them, in C, without the JS engine's streams. What the filter sees and what
 * its answers do is the body stage's (`flows/http/body-stage.ts`), as on every other engine:
 * the chooser's failure is answered 500, a stop before the first bytes left is answered with its
 * status (the engine holds the head back until then), after them it cuts the response.
 *
 * Ordering rules: the engine calls {@link NativeBodies.onChunk} with one chunk at a time and
 * reads no more of that body until the call returned or its promise settled
 * ({@link H1_FILTER}.pending, then `h1Resume`). The call never re-enters the engine: a stop's
 * answer is queued as a microtask, which the engine runs within its next batch.
 */
import type { RequestState } from '../../context/state.ts';
import { type BodyStage, responseBodyStage } from '../../flows/http/body-stage.ts';
import { rawToHeaders } from '../../flows/http/headers.ts';
import type { Native } from '../../flows/stream/native-addon.ts';
import type { ResponseHead } from '../../hooks/http-request.ts';
import type { Runtime } from '../../runtime.ts';

type H1 = Native['h1'];
type Engine = ReturnType<H1['h1Engine']>;

/** One filtered body. */
interface Filtered {
  readonly stage: BodyStage;
  readonly request: RequestState;
  readonly bytesUp: number;
  bytesIn: number;
}

/** How the engine's owner records and answers a failed request (`NativeH1`). */
export interface BodyFailures {
  /** Records a request that failed after its head was sent on (the response cut). */
  settle(request: RequestState, e: unknown, bytesUp: number, bytesDown: number): void;
  /** Records a request that failed before its response head left, and answers it. */
  answer(id: number, request: RequestState, e: unknown, bytesUp: number): void;
}

function isThenable(v: unknown): v is Promise<Buffer | null> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** The response body filters of one engine's connections. */
export class NativeBodies {
  readonly #rt: Runtime;
  readonly #h1: H1;
  readonly #engine: Engine;
  readonly #failures: BodyFailures;
  /** The filtered body of each connection whose response body is under way. */
  readonly #bodies = new Map<number, Filtered>();

  constructor(rt: Runtime, h1: H1, engine: Engine, failures: BodyFailures) {
    this.#rt = rt;
    this.#h1 = h1;
    this.#engine = engine;
    this.#failures = failures;
    h1.h1FilterBodies(engine, this.onChunk);
  }

  /** A response head with a body (`head`: its bytes as received): the filter, if any, is chosen. */
  head(id: number, request: RequestState, status: number, head: Buffer, bytesUp: number): void {
    const res: ResponseHead = { status, headers: rawToHeaders(headFields(head)) };
    let stage: BodyStage | null;
    try {
      stage = responseBodyStage(this.#rt, request.method, res, request);
    } catch (e) {
      this.#h1.h1Filter(this.#engine, id, this.#h1.H1_FILTER_MODE.refused);
      this.#failures.answer(id, request, e, bytesUp);
      return;
    }
    if (stage === null) {
      this.#h1.h1Filter(this.#engine, id, this.#h1.H1_FILTER_MODE.none);
      return;
    }
    this.#bodies.set(id, { stage, request, bytesUp, bytesIn: 0 });
    const m = this.#h1.H1_FILTER_MODE;
    const mode = (stage.rewrites ? m.rewrite : m.observe) | (stage.lent ? m.lend : 0);
    this.#h1.h1Filter(this.#engine, id, mode);
  }

  /** True while connection `id` has a filtered body under way. */
  filtering(id: number): boolean {
    return this.#bodies.has(id);
  }

  /** Connection `id`'s exchange ended before its filtered body did: the filter hears why. */
  aborted(id: number, reason: string): void {
    const body = this.#bodies.get(id);
    if (body === undefined) return;
    this.#bodies.delete(id);
    body.stage.abort(reason);
  }

  /** The engine's call for each chunk (`n` bytes at the start of `buf`) and the end (`n` < 0). */
  readonly onChunk = (
    id: number,
    n: number,
    buf: Buffer | undefined,
    headSent: boolean,
  ): Buffer | null | undefined | number => {
    const body = this.#bodies.get(id);
    if (body === undefined) return this.#h1.H1_FILTER.stopped;
    const chunk = n < 0 || buf === undefined ? null : n === buf.length ? buf : buf.subarray(0, n);
    let out: Buffer | null | Promise<Buffer | null>;
    try {
      if (chunk === null) out = body.stage.end();
      else {
        body.bytesIn += n;
        out = body.stage.write(chunk);
      }
    } catch (e) {
      this.#stopped(id, body, e, headSent);
      return this.#h1.H1_FILTER.stopped;
    }
    if (isThenable(out)) {
      out.then(
        (bytes) => {
          if (this.#bodies.get(id) !== body) return;
          if (chunk === null) this.#bodies.delete(id);
          this.#h1.h1Resume(this.#engine, id, bytes, false);
        },
        (e: unknown) => {
          if (this.#bodies.get(id) !== body) return;
          this.#bodies.delete(id);
          // The engine answers-waits while the head was still held, and cuts the response otherwise.
          if (this.#h1.h1Resume(this.#engine, id, null, true))
            this.#failures.answer(id, body.request, e, body.bytesUp);
          else this.#failures.settle(body.request, e, body.bytesUp, body.bytesIn);
        },
      );
      return this.#h1.H1_FILTER.pending;
    }
    if (chunk === null) this.#bodies.delete(id);
    return out === chunk ? undefined : out;
  };

  /**
   * The stage stopped the body (a filter's stop, a limit, a failure): recorded here, and answered
   * while no response bytes left (`headSent` false: the engine waits in its answer state).
   */
  #stopped(id: number, body: Filtered, e: unknown, headSent: boolean): void {
    this.#bodies.delete(id);
    if (headSent) {
      this.#failures.settle(body.request, e, body.bytesUp, body.bytesIn);
      return;
    }
    // Not from inside the engine's call: its answer state begins when the call returned.
    queueMicrotask(() => this.#failures.answer(id, body.request, e, body.bytesUp));
  }
}

/** The fields of a response head as received (a status line, then `name: value` lines), raw. */
export function headFields(head: Buffer): string[] {
  const lines = head.toString('latin1').split('\r\n');
  const raw: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    raw.push(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return raw;
}
