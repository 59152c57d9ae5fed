/**
 * Adapters that let an HTTP/2 stream drive the same pipelines as HTTP/1.1: a CONNECT stream
 * becomes a `ConnectExchange` for the tunnel pipeline (the stream itself is the tunnel's
 * Duplex), and a regular request becomes the request/response pair the forwarding pipeline
 * takes (Node's HTTP/2 compatibility objects, with pseudo-header fields hidden). No proxy logic
 * lives here: only the framing differences between the two HTTP versions.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { log } from 'foundations/telemetry';
import { kAbortForPeer } from '../../flows/stream/pump.ts';
import type { HttpHeaders, RequestHead, ResponseHead } from '../../hooks/http-request.ts';
import type { ConnectExchange } from '../../tunnels/connect.ts';
import { http2ResponseHeaders, regularHeaders } from './headers.ts';

/** Answers a stream with `status` and a short text body, unless it has already answered. */
export function respondText(stream: http2.ServerHttp2Stream, status: number, body: string): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  stream.respond({
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  stream.end(body);
}

/**
 * Resets a CONNECT stream with CONNECT_ERROR, and nothing before it. `close()` ends a still open
 * writable side first (Node's `closeStream`), which queues END_STREAM ahead of the RST_STREAM:
 * on a stream the client has already half-closed, that END_STREAM closes the stream and the
 * reset is dropped, so a truncated tunnel would look complete to the client. With `_final`
 * made a no-op, that `end()` sends nothing and the reset is the stream's last frame (DATA
 * already handed to nghttp2 still goes out before it); the writable side never finishes, which
 * is the truth: the tunnel was cut.
 */
function resetConnectStream(stream: http2.ServerHttp2Stream): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.writableEnded) stream._final = () => {};
  stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
}

/**
 * A CONNECT stream (RFC 9113 §8.5) as the tunnel pipeline sees it: `accept` sends the 2xx
 * HEADERS frame (without END_STREAM) and hands back the stream, whose DATA frames are the
 * tunnel's bytes; END_STREAM is the tunnel's half-close and RST_STREAM its abort.
 */
export class Http2ConnectExchange implements ConnectExchange {
  readonly head: RequestHead;
  readonly #stream: http2.ServerHttp2Stream;

  constructor(stream: http2.ServerHttp2Stream, head: RequestHead) {
    this.#stream = stream;
    this.head = head;
  }

  get closed(): boolean {
    return this.#stream.destroyed || this.#stream.closed;
  }

  accept(res: ResponseHead): Duplex {
    const stream = this.#stream as http2.ServerHttp2Stream & { [kAbortForPeer]?: () => void };
    // The upstream connection reset or failed: RST_STREAM CONNECT_ERROR (RFC 9113 §8.5).
    stream[kAbortForPeer] = () => resetConnectStream(stream);
    try {
      this.#stream.respond({ ...http2ResponseHeaders(res.headers), ':status': res.status });
    } catch (e) {
      // A hook may have set a field HTTP/2 cannot carry (a bad name or value): the tunnel
      // attempt fails on this stream only, never the pipeline that called us.
      log.warn('CONNECT response head not sendable over HTTP/2', { err: (e as Error).message });
      this.#stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    }
    return this.#stream;
  }

  reject(status: number, body: string): void {
    respondText(this.#stream, status, body);
  }

  clientStream(): Duplex {
    return this.#stream;
  }
}

/**
 * The request half of a forwarded HTTP/2 request: Node's compatibility request, whose
 * `headers` and `rawHeaders` carry only regular fields (pseudo-header and connection-specific
 * fields removed; `cookie` crumbs joined, as RFC 9113 §8.2.3 asks before HTTP/1.1).
 */
export function forwardRequest(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  rawHeaders: string[],
): http2.Http2ServerRequest {
  const req = new http2.Http2ServerRequest(stream, headers, {}, rawHeaders);
  const regular: HttpHeaders = regularHeaders(headers);
  const raw: string[] = [];
  for (const name in regular) {
    const v = regular[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) raw.push(name, x);
    else raw.push(name, v);
  }
  Object.defineProperty(req, 'headers', { value: regular, enumerable: true });
  Object.defineProperty(req, 'rawHeaders', { value: raw, enumerable: true });
  return req;
}

/**
 * The response half of a forwarded HTTP/2 request: Node's compatibility response, except that
 * an HTTP/1.1 reason phrase is dropped silently (HTTP/2 has none; Node would warn).
 */
export class ForwardResponse extends http2.Http2ServerResponse {
  override writeHead(
    status: number,
    reasonOrHeaders?: string | http2.OutgoingHttpHeaders | readonly string[],
    headers?: http2.OutgoingHttpHeaders | readonly string[],
  ): this {
    if (typeof reasonOrHeaders === 'string')
      return super.writeHead(status, headers as http2.OutgoingHttpHeaders);
    return super.writeHead(status, reasonOrHeaders as http2.OutgoingHttpHeaders);
  }
}
