/**
 * Moves one body from a Node readable (a client's request, an upstream's response) to a Node
 * writable (the upstream request, the client's response) through a {@link BodyStage}: the glue
 * between the stage and the `http.request` path of `forward-exchange.ts`. (The HTTP/1.1 engine
 * drives the stage from its own parser and writer; this file goes with the path it replaces.)
 *
 * Ordering rules: chunks reach the stage in order and what it returns is written in the same
 * order (the stage chains its own async calls); the source is paused while a filter's promise
 * is pending or the sink is full, and resumed when neither holds it (backpressure both ways).
 * The sink is ended only after the stage's `end` settled. A stop or a failure is reported once,
 * and nothing more is written after it or after {@link BodyPump.cancel}.
 */
import type { Readable, Writable } from 'node:stream';
import type { BodyStage } from './body-stage.ts';

/** A running pump. */
export interface BodyPump {
  /** The exchange ended: write nothing more, and tell the stage (`abort`) if the body had not ended. */
  cancel(reason: string): void;
}

function isThenable(v: unknown): v is Promise<Buffer | null> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Pumps `src` into `sink` through `stage`. `onStop` gets what the stage threw or rejected with
 * (a `BodyStopped`), once; the caller fails the exchange with it. `beforeFirst`, when given, runs
 * once before the first bytes are written to `sink` or it is ended (a response head held back).
 */
export function pumpBody(
  src: Readable,
  stage: BodyStage,
  sink: Writable,
  onStop: (e: unknown) => void,
  beforeFirst: (() => void) | null = null,
): BodyPump {
  let first = beforeFirst;
  const started = (): void => {
    if (first === null) return;
    const f = first;
    first = null;
    f();
  };
  let stopped = false;
  let ended = false;
  /** Reasons the source is paused: a pending filter call, a full sink. */
  let holds = 0;
  const hold = (): void => {
    if (holds++ === 0) src.pause();
  };
  const release = (): void => {
    if (--holds === 0 && !stopped) src.resume();
  };
  const stop = (e: unknown): void => {
    if (stopped) return;
    stopped = true;
    src.pause();
    onStop(e);
  };
  const deliver = (out: Buffer | null): void => {
    if (stopped || out === null || out.length === 0) return;
    started();
    if (!sink.write(out)) {
      hold();
      sink.once('drain', release);
    }
  };
  const finish = (last: Buffer | null): void => {
    if (stopped) return;
    ended = true;
    started();
    if (last === null || last.length === 0) sink.end();
    else sink.end(last);
  };

  src.on('data', (chunk: Buffer) => {
    if (stopped) return;
    let out: Buffer | null | Promise<Buffer | null>;
    try {
      out = stage.write(chunk);
    } catch (e) {
      stop(e);
      return;
    }
    if (!isThenable(out)) {
      deliver(out);
      return;
    }
    hold();
    out.then(
      (b) => {
        deliver(b);
        release();
      },
      (e: unknown) => {
        stop(e);
        release();
      },
    );
  });
  const onEnd = (): void => {
    if (stopped) return;
    let last: Buffer | null | Promise<Buffer | null>;
    try {
      last = stage.end();
    } catch (e) {
      stop(e);
      return;
    }
    if (isThenable(last)) last.then(finish, stop);
    else finish(last);
  };
  // A body already read to its end (an empty one, say) still ends through the stage.
  if (src.readableEnded) queueMicrotask(onEnd);
  else src.once('end', onEnd);
  return {
    cancel(reason: string): void {
      if (stopped) return;
      stopped = true;
      if (!ended) stage.abort(reason);
    },
  };
}

/** Raw headers (`[name, value, …]`) without `Content-Length`, for a body whose length may change. */
export function withoutLength(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length !== 14 || name.toLowerCase() !== 'content-length') out.push(name, raw[i + 1] as string);
  }
  return out;
}
