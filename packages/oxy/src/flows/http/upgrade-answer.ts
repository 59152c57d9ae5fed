/**
 * The upstream's answer to an `Upgrade` request, read by llhttp: the head first (a `101`, or a
 * final answer whose body then streams), so that `HttpRequestHook.handleResponse` can run
 * between the two without a byte of the body being lost or passed on before it.
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { OXY_ERR, OxyError, toOxyError } from '../../errors.ts';

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  [callback: number]: unknown;
}
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: {
    new (): NativeParser;
    readonly RESPONSE: number;
    readonly kOnHeaders: number;
    readonly kOnHeadersComplete: number;
    readonly kOnBody: number;
    readonly kOnMessageComplete: number;
    readonly kLenientNone: number;
  };
};

/** The upstream's answer head, as {@link UpgradeAnswer} read it. */
export interface AnswerHead {
  readonly status: number;
  readonly statusText: string;
  /** `[name, value, …]` as received. */
  readonly rawHeaders: string[];
  /** For a `101`: the bytes read after its head (the new protocol's); null for any other answer. */
  readonly rest: Buffer | null;
}

/** Where {@link UpgradeAnswer.relay} streams the body of an answer that is not a `101`. */
export interface AnswerSink {
  /** A piece of the body, de-chunked. */
  body(chunk: Buffer): void;
  /** The whole body arrived. */
  end(): void;
  /** The upstream failed before the body ended. */
  error(e: Error): void;
}

/**
 * The upstream's answer to an `Upgrade` request, read by llhttp (strict). `head` settles with
 * the final answer's head (a `101` carries the bytes after it), or null once closed first; it
 * rejects when the upstream fails or does not answer within `egress.response_timeout`. 1xx
 * other than 101 are skipped. Once the head is read the socket is paused: a `101` leaves the
 * rest to its new owner, any other answer's body (and end) waits, held, for `relay` (a response
 * hook may run meanwhile), and is then streamed as it comes.
 */
export class UpgradeAnswer {
  /** The answer's head; null when closed before it; rejects on failure or timeout. */
  readonly head: Promise<AnswerHead | null>;
  #settle!: (head: AnswerHead | null) => void;
  #reject!: (e: Error) => void;
  #sink: AnswerSink | null = null;
  #held: Buffer[] = [];
  #heldEnd = false;
  #heldError: Error | null = null;
  readonly #socket: Duplex;
  readonly #parser: NativeParser;
  #fields: string[] = [];
  #switchedHead: [string, string[]] | null = null;
  #answered = false;
  #closed = false;
  #executing = false;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(socket: Duplex, limitMs: number) {
    this.#socket = socket;
    this.head = new Promise((resolve, reject) => {
      this.#settle = resolve;
      this.#reject = reject;
    });
    const p = new HTTPParser();
    p.initialize(HTTPParser.RESPONSE, {}, http.maxHeaderSize, HTTPParser.kLenientNone);
    p[HTTPParser.kOnHeaders] = (headers: string[]) => {
      for (const h of headers) this.#fields.push(h);
    };
    p[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusText: string,
    ): number => {
      const raw = this.#fields.concat(headers ?? []);
      this.#fields = [];
      if (status === 101) {
        this.#switchedHead = [statusText, raw];
        return 2; // stop: what follows belongs to the new protocol
      }
      if (status < 200) return 0;
      this.#answered = true;
      clearTimeout(this.#timer);
      this.#socket.pause();
      this.#settle({ status, statusText, rawHeaders: raw, rest: null });
      return 0;
    };
    p[HTTPParser.kOnBody] = (chunk: Buffer) => {
      if (this.#sink === null) this.#held.push(chunk);
      else this.#sink.body(chunk);
    };
    p[HTTPParser.kOnMessageComplete] = () => {
      if (!this.#answered) return;
      if (this.#sink === null) this.#heldEnd = true;
      else this.#sink.end();
    };
    this.#parser = p;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    // A socket paused by its connector (an upstream proxy's tunnel, read up to its 200) flows
    // only once asked to: a 'data' listener alone leaves an explicit pause in place.
    socket.resume();
    this.#timer =
      limitMs > 0
        ? setTimeout(() => {
            if (!this.#answered)
              this.#fail(
                new OxyError(OXY_ERR.RESPONSE_TIMEOUT, 'upstream response timeout', { source: 'upstream' }),
              );
          }, limitMs)
        : undefined;
  }

  /** Streams the body of an answer that is not a `101` to `sink`, starting with what is held. */
  relay(sink: AnswerSink): void {
    this.#sink = sink;
    const held = this.#held;
    this.#held = [];
    for (const c of held) sink.body(c);
    if (this.#heldEnd) sink.end();
    else if (this.#heldError !== null) sink.error(this.#heldError);
    else if (!this.#closed) this.#socket.resume();
  }

  readonly #onData = (d: Buffer): void => {
    if (this.#closed) return;
    this.#executing = true;
    const r = this.#parser.execute(d);
    this.#executing = false;
    if (this.#closed) {
      this.#parser.close(); // closed from one of its callbacks: freed now, after `execute`
      return;
    }
    if (r instanceof Error) {
      this.#fail(r);
      return;
    }
    const sw = this.#switchedHead;
    if (sw !== null) {
      this.#switchedHead = null;
      this.#answered = true;
      const rest = r < d.length ? d.subarray(r) : Buffer.alloc(0);
      this.close();
      this.#socket.pause();
      this.#settle({ status: 101, statusText: sw[0], rawHeaders: sw[1], rest });
    }
  };

  readonly #onEnd = (): void => {
    if (this.#closed) return;
    // A body delimited by the close ends here.
    this.#executing = true;
    const r = this.#parser.finish();
    this.#executing = false;
    if (this.#closed) {
      this.#parser.close();
      return;
    }
    if (r instanceof Error) this.#fail(r);
    else if (!this.#answered) this.#fail(new Error('upstream closed the connection'));
  };

  readonly #onError = (e: Error): void => {
    this.#fail(e);
  };

  readonly #onClose = (): void => {
    if (!this.#closed) this.#fail(new Error('upstream closed the connection'));
  };

  #fail(e: Error): void {
    if (this.#closed) return;
    const err = toOxyError(e, OXY_ERR.UPSTREAM_FAILED, 'upstream');
    // Rejected first: closing unanswered settles `head` with null.
    if (!this.#answered) this.#reject(err);
    this.close();
    if (!this.#answered) return;
    if (this.#sink === null) this.#heldError = err;
    else this.#sink.error(err);
  }

  /** Stops the body while the client cannot take more (backpressure). */
  pause(): void {
    this.#socket.pause();
  }

  /** Lets the body flow again. */
  resume(): void {
    this.#socket.resume();
  }

  /** Stops reading (idempotent); the socket is left to its owner. Before an answer, `head` is null. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    const s = this.#socket;
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
    // The native parser must not be freed under its own callbacks.
    if (!this.#executing) this.#parser.close();
    if (!this.#answered) this.#settle(null);
  }
}
