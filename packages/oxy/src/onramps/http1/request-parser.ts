/**
 * HTTP/1.1 requests for the on-ramp, parsed by llhttp through Node's own binding
 * (`_http_common`, the parser `node:http` uses, strict, with its `max_header_size`): heads,
 * bodies in either framing (`Content-Length`, chunked with trailers) and the message ends, fed
 * to a {@link RequestEvents} receiver. One parser per connection, kept while the connection is
 * served here and given back to a free list when it leaves.
 *
 * Ordering rules: events come in the order of the bytes, from inside `execute`; a receiver that
 * answers `STOP_AFTER_HEAD` from `head` (CONNECT, Upgrade) ends parsing there, and `execute`
 * returns where the bytes after that head start. Pipelined requests are parsed as they arrive;
 * the receiver queues them.
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
}

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string });
  finish(): number | (Error & { code?: string }) | undefined;
  free(): void;
  close(): void;
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

/** One connection's request parser. */
export class RequestParser {
  readonly events: RequestEvents;
  #native: NativeParser | null;
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

  /** True between a head and the end of its message (a body being read). */
  get inBody(): boolean {
    return this.#inBody;
  }

  /** Gives the native parser back (idempotent); nothing more is parsed. */
  release(): void {
    const p = this.#native;
    if (p === null) return;
    this.#native = null;
    p.owner = null;
    p.free();
    if (freeParsers.length < MAX_FREE_PARSERS) freeParsers.push(p);
    else p.close();
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
    const rawHeaders = headers ?? this.#part;
    const head: ParsedHead = { version, method, url: url ?? this.#partUrl, rawHeaders, upgrade, keepAlive };
    this.#part = [];
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
