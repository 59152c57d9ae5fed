/**
 * One HTTP/1.1 request on a connection of the on-ramp (`connection.ts`): its parsed head, what
 * the head says about its body and `Expect`, and its body as the exchange engine's
 * `BodySource`. Body pieces the parser delivers before the engine asks for them are held; a
 * receiver that is full pauses the connection's reading until it drains.
 */
import type { BodySink, BodySource } from '../../flows/http/exchange.ts';
import type { ParsedHead } from './request-parser.ts';

/** How a request's body holds back its connection's reading. */
export interface ReadControl {
  pauseReading(): void;
  resumeReading(): void;
}

/** One request on a connection: its head, and its body as the engine's {@link BodySource}. */
export class H1Request implements BodySource {
  readonly head: ParsedHead;
  readonly #conn: ReadControl;
  /** `Content-Length`, or -1 for chunked. */
  length = -1;
  hasBody = false;
  expectContinue = false;
  problem: [number, string] | null = null;
  /** The whole message was parsed (its body, if any, included). */
  complete = false;
  #chunks: Buffer[] = [];
  #trailers: string[] | null = null;
  #sink: BodySink | null = null;
  #paused = false;
  #endSent = false;
  #stopped = false;
  /** What a paused sink calls to go on; made when a body is first handed on (a bodiless request needs none). */
  #resume: (() => void) | null = null;

  constructor(head: ParsedHead, conn: ReadControl) {
    this.head = head;
    this.#conn = conn;
  }

  /** True when the body was not all read and handed on (the connection cannot carry another request). */
  get unread(): boolean {
    return this.#stopped || !this.complete;
  }

  push(chunk: Buffer): void {
    if (this.#stopped) return;
    this.#chunks.push(chunk);
    if (this.#sink !== null && !this.#paused) this.#flush();
  }

  finish(trailers: string[] | null): void {
    this.complete = true;
    this.#trailers = trailers;
    if (this.#sink !== null && !this.#paused) this.#flush();
  }

  fail(e: unknown): void {
    const sink = this.#sink;
    this.stop();
    sink?.error(e);
  }

  start(sink: BodySink): void {
    if (this.#stopped) return;
    this.#sink = sink;
    this.#flush();
  }

  stop(): void {
    this.#stopped = true;
    this.#sink = null;
    this.#chunks = [];
  }

  #flush(): void {
    const sink = this.#sink;
    if (sink === null) return;
    while (this.#chunks.length > 0) {
      const c = this.#chunks.shift() as Buffer;
      this.#resume ??= () => {
        this.#paused = false;
        this.#flush();
        if (!this.#paused) this.#conn.resumeReading();
      };
      if (!sink.data(c, this.#resume)) {
        if (this.#sink === null) return;
        this.#paused = true;
        this.#conn.pauseReading();
        return;
      }
      if (this.#sink === null) return;
    }
    if (this.complete && !this.#endSent) {
      this.#endSent = true;
      sink.end(this.#trailers);
    }
  }
}

/** What a head says about its body and `Expect` (llhttp validated the framing fields). */
export function describe(req: H1Request): void {
  const raw = req.head.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const n = name.length;
    if (n !== 6 && n !== 14 && n !== 17) continue;
    const lower = name.toLowerCase();
    if (lower === 'transfer-encoding') {
      req.hasBody = true;
      req.length = -1;
    } else if (lower === 'content-length') {
      const len = Number(raw[i + 1]);
      if (len > 0 && !req.hasBody) {
        req.hasBody = true;
        req.length = len;
      }
    } else if (lower === 'expect') {
      if ((raw[i + 1] as string).trim().toLowerCase() === '100-continue' && req.head.version === 11)
        req.expectContinue = true;
      else req.problem = [417, 'expectation_failed'];
    }
  }
  if (!req.hasBody) req.expectContinue = false;
}
