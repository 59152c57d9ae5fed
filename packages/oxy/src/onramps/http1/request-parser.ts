/**
 * Request heads for the lean HTTP/1.1 on-ramp, parsed by llhttp through Node's own binding
 * (`_http_common`, the parser `node:http` uses, strict, with its `max_header_size`). The parser
 * stops after each head (no body: the lean on-ramp serves only bodiless requests and hands
 * anything else over), so `execute` returns where the bytes after the head start.
 *
 * Parsers are pooled: a connection takes one when a head starts and gives it back when the head
 * is complete, so idle connections and tunnels hold none.
 */
import { createRequire } from 'node:module';

/** Where a parser puts the head it parsed. */
export interface HeadSink {
  /** Set when a head is complete; the reader clears it. */
  ready: boolean;
  /** HTTP version × 10 (11 for HTTP/1.1). */
  version: number;
  method: string;
  url: string;
  /** `[name, value, …]` as received. */
  rawHeaders: string[];
  /** llhttp's upgrade flag (CONNECT, or `Upgrade` with `Connection: upgrade`). */
  upgrade: boolean;
  /** False when the client asked to close after this request. */
  keepAlive: boolean;
  /** Parts of a long head delivered before its end (llhttp flushes every 32 fields). */
  partHeaders: string[];
  partUrl: string;
}

/** Node's binding of llhttp (`_http_common`), typed with the members used here. */
export interface RequestParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string });
  free(): void;
  close(): void;
  owner: HeadSink | null;
  [callback: number]: unknown;
}
interface ParserClass {
  new (): RequestParser;
  readonly REQUEST: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kLenientNone: number;
}
const { HTTPParser, methods } = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: ParserClass;
  methods: readonly string[];
};

/** Parsers not in use. */
const freeParsers: RequestParser[] = [];
const MAX_FREE_PARSERS = 256;
/** The async resource the parsers report to `async_hooks`. */
const PARSER_RESOURCE = {};

function onParserHeaders(this: RequestParser, headers: string[], url: string): void {
  const c = this.owner;
  if (c === null) return;
  for (const h of headers) c.partHeaders.push(h);
  c.partUrl += url;
}

function onParserHeadersComplete(
  this: RequestParser,
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
  const c = this.owner;
  if (c !== null) {
    c.ready = true;
    c.version = versionMajor * 10 + versionMinor;
    c.rawHeaders = headers ?? c.partHeaders;
    c.url = url ?? c.partUrl;
    c.method = methods[method] ?? '';
    c.upgrade = upgrade;
    c.keepAlive = shouldKeepAlive;
    c.partHeaders = [];
    c.partUrl = '';
  }
  // 2: no body, and stop after the head: `execute` returns where the next bytes start.
  return 2;
}

/** A parser ready for a request head, reporting to `owner`. */
export function takeParser(owner: HeadSink, maxHeaderSize: number): RequestParser {
  let p = freeParsers.pop();
  if (p === undefined) {
    p = new HTTPParser();
    p[HTTPParser.kOnHeaders] = onParserHeaders;
    p[HTTPParser.kOnHeadersComplete] = onParserHeadersComplete;
  }
  p.initialize(HTTPParser.REQUEST, PARSER_RESOURCE, maxHeaderSize, HTTPParser.kLenientNone);
  p.owner = owner;
  return p;
}

/** Gives a parser back once its head is complete (or its connection is gone). */
export function releaseParser(p: RequestParser): void {
  p.owner = null;
  p.free();
  if (freeParsers.length < MAX_FREE_PARSERS) freeParsers.push(p);
  else p.close();
}
