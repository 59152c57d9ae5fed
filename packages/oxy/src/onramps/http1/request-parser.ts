/**
 * HTTP/1.1 requests for the on-ramp, parsed by llhttp through Node's own binding
 * (`_http_common`, the parser `node:http` uses, strict, with its `max_header_size`): heads,
 * bodies in either framing (`Content-Length`, chunked with trailers) and the message ends, fed
 * to a {@link RequestEvents} receiver. One parser per connection, kept while the connection is
 * served here and given back to a free list when it leaves.
 *
 * A parser may also read a plain TCP socket's handle itself ({@link RequestParser.consume}), as
 * `node:http`'s server does: each read is parsed in C++ from a buffer the binding reuses, with no
 * `Buffer`, stream push or `'data'` event in JS, and `executed` is called after it.
 *
 * Ordering rules: events come in the order of the bytes, from inside `execute` (or a consumed
 * read); a receiver that answers `STOP_AFTER_HEAD` from `head` (CONNECT, Upgrade) ends parsing
 * there, and `execute` returns (`executed` receives) where the bytes after that head start.
 * Pipelined requests are parsed as they arrive; the receiver queues them. A consuming parser is
 * given back (`release`) only after it stopped consuming, which `release` does first.
 */
import { createRequire } from 'node:module';

/** A request head as parsed. */
export interface ParsedHead {
  /** HTTP version × 10 (11 for HTTP/1.1). */
  readonly version: number;
  readonly method: string;
  readonly url: string;
  /** `[name, value, …]` as received. */
  readonly rawHeaders: string[];
  /** llhttp's upgrade flag (CONNECT, or `Upgrade` with `Connection: upgrade`). */
  readonly upgrade: boolean;
  /** False when the client asked to close after this request. */
  readonly keepAlive: boolean;
}

/** What `head` answers: read the body as framed, or stop parsing after this head. */
export const READ_BODY = 0;
export const STOP_AFTER_HEAD = 2;

/** Where a parser's events go. */
export interface RequestEvents {
  /** A head is complete; answer {@link READ_BODY} or {@link STOP_AFTER_HEAD}. */
  head(head: ParsedHead): number;
  /** A piece of the body of the last head. */
  body(chunk: Buffer): void;
  /** The message of the last head is complete; `trailers` (`[name, value, …]`) if it had any. */
  end(trailers: string[] | null): void;
  /** A read the parser consumed itself was parsed: the bytes consumed, or llhttp's error. */
  executed(ret: number | (Error & { code?: string })): void;
}

/** A libuv stream handle (`socket._handle`) the parser can read from itself. */
export interface StreamHandle {
  readonly isStreamBase?: boolean;
  _consumed?: boolean;
  readStart(): number;
  readStop(): number;
}

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string });
  finish(): number | (Error & { code?: string }) | undefined;
  free(): void;
  close(): void;
  consume(handle: StreamHandle): void;
  unconsume(): void;
  getCurrentBuffer(): Buffer;
  [callback: number]: unknown;
  owner: RequestParser | null;
}
interface ParserClass {
  new (): NativeParser;
  readonly REQUEST: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
}
const { HTTPParser, methods } = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: ParserClass;
  methods: readonly string[];
};

/** Native parsers not in use. */
const freeParsers: NativeParser[] = [];
const MAX_FREE_PARSERS = 256;
/** The async resource the parsers report to `async_hooks`. */
const PARSER_RESOURCE = {};

function onHeaders(this: NativeParser, headers: string[], url: string): void {
  this.owner?.fields(headers, url);
}

function onHeadersComplete(
  this: NativeParser,
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  _statusCode: unknown,
  _statusMessage: unknown,
  upgrade: boolean,
  shouldKeepAlive: boolean,
): number {
  const o = this.owner;
  if (o === null) return STOP_AFTER_HEAD;
  return o.headComplete(
    versionMajor * 10 + versionMinor,
    headers,
    methods[method] ?? '',
    url,
    upgrade,
    shouldKeepAlive,
  );
}

function onBody(this: NativeParser, chunk: Buffer): void {
  this.owner?.events.body(chunk);
}

function onMessageComplete(this: NativeParser): void {
  this.owner?.messageComplete();
}

function onExecute(this: NativeParser, ret: number | (Error & { code?: string })): void {
  this.owner?.events.executed(ret);
}

function closeParser(p: NativeParser): void {
  p.close();
}

/** One connection's request parser. */
export class RequestParser {
  readonly events: RequestEvents;
  #native: NativeParser | null;
  /** The socket handle the parser reads itself, or null (fed through `execute`). */
  #handle: StreamHandle | null = null;
  /** Fields (and URL) of a long head flushed before its end, or trailers after a body. */
  #part: string[] = [];
  #partUrl = '';
  #inBody = false;

  constructor(events: RequestEvents, maxHeaderSize: number) {
    this.events = events;
    let p = freeParsers.pop();
    if (p === undefined) {
      p = new HTTPParser();
      p[HTTPParser.kOnHeaders] = onHeaders;
      p[HTTPParser.kOnHeadersComplete] = onHeadersComplete;
      p[HTTPParser.kOnBody] = onBody;
      p[HTTPParser.kOnMessageComplete] = onMessageComplete;
      p[HTTPParser.kOnExecute] = onExecute;
    }
    p.initialize(HTTPParser.REQUEST, PARSER_RESOURCE, maxHeaderSize, HTTPParser.kLenientNone);
    p.owner = this;
    this.#native = p;
  }

  /** Parses `data`: the bytes consumed, or llhttp's error (with its `code`). */
  execute(data: Buffer): number | (Error & { code?: string }) {
    const p = this.#native;
    if (p === null) return 0;
    return p.execute(data);
  }

  /**
   * From now on the parser reads `handle` itself (a plain TCP socket's, not consumed by anyone
   * else, nothing buffered in the socket): events come from its reads, then `executed`. The
   * socket still sees the end of input and errors ('end', 'close').
   */
  consume(handle: StreamHandle): void {
    const p = this.#native;
    if (p === null || this.#handle !== null) return;
    handle._consumed = true;
    p.consume(handle);
    this.#handle = handle;
  }

  /** The handle this parser reads, or null. */
  get handle(): StreamHandle | null {
    return this.#handle;
  }

  /** The bytes of the read being parsed, from inside `executed` (a copy). */
  currentBuffer(): Buffer {
    return this.#native?.getCurrentBuffer() ?? Buffer.alloc(0);
  }

  /** True between a head and the end of its message (a body being read). */
  get inBody(): boolean {
    return this.#inBody;
  }

  /** Gives the native parser back (idempotent); nothing more is parsed. */
  release(): void {
    const p = this.#native;
    if (p === null) return;
    const consumed = this.unconsume();
    this.#native = null;
    p.owner = null;
    p.free();
    if (freeParsers.length < MAX_FREE_PARSERS) freeParsers.push(p);
    // This may run inside the parser's own read callback: then it is closed after it.
    else if (consumed) setImmediate(closeParser, p);
    else p.close();
  }

  /** Stops reading the handle (if it did): the socket reads for itself again. True if it did. */
  unconsume(): boolean {
    const h = this.#handle;
    if (h === null) return false;
    this.#handle = null;
    this.#native?.unconsume();
    h._consumed = false;
    return true;
  }

  fields(headers: string[], url: string): void {
    for (const h of headers) this.#part.push(h);
    this.#partUrl += url;
  }

  headComplete(
    version: number,
    headers: string[] | undefined,
    method: string,
    url: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    let rawHeaders: string[];
    if (headers === undefined) {
      // The fields came in pieces (a long head): they are the head's now.
      rawHeaders = this.#part;
      this.#part = [];
    } else {
      rawHeaders = headers;
      if (this.#part.length > 0) this.#part = [];
    }
    const head: ParsedHead = { version, method, url: url ?? this.#partUrl, rawHeaders, upgrade, keepAlive };
    this.#partUrl = '';
    const r = this.events.head(head);
    this.#inBody = r === READ_BODY;
    return r;
  }

  messageComplete(): void {
    if (!this.#inBody) return; // the end of a head parsing stopped after
    this.#inBody = false;
    let trailers: string[] | null = null;
    if (this.#part.length > 0) {
      trailers = this.#part;
      this.#part = [];
    }
    this.events.end(trailers);
  }
}
