/**
 * One lean HTTP/1.1 response framed onto a client socket: the head is held until the first
 * piece of body (or the end) so that a small response leaves in one write; a body without a
 * `Content-Length` from upstream is sent chunked (to an HTTP/1.0 client: delimited by the close
 * instead); HEAD, 1xx, 204 and 304 carry no body. The connection fields say `Connection: close`
 * when the response is the connection's last. On a plain TCP socket the writes go through the
 * addon's writer from the first response on (`offload.ts`): a small response is written at once
 * on the JS thread without Node's per-write machinery, a large body on the reactor thread; any
 * other stream (TLS, an intercepted stream) is written through its own `write`.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { keepsContentLength, serializeRawHeaders } from '../../flows/http/headers.ts';
import { offloadWrites, writeDirect } from '../../flows/stream/offload.ts';

/** Above this, a body is written after its head rather than copied beside it. */
const COPY_LIMIT = 65536;

/** The framing state of the response under way on one socket. */
export class SocketResponse {
  readonly #socket: net.Socket;
  #isHead = false;
  #http10 = false;
  #pendingHead: string | null = null;
  #headSent = false;
  #chunked = false;
  #trailers: readonly string[] | null = null;
  /** True when the connection closes after this response. */
  closeAfter = false;

  constructor(socket: Duplex) {
    // Typed as a socket for the offload calls, which leave any other stream as it is.
    this.#socket = socket as net.Socket;
  }

  /** Starts a response to a request with `method` in HTTP `version` × 10. */
  reset(method: string, version = 11): void {
    this.#isHead = method === 'HEAD';
    this.#http10 = version < 11;
    this.#pendingHead = null;
    this.#headSent = false;
    this.#chunked = false;
    this.#trailers = null;
    this.closeAfter = false;
  }

  /** Holds the head; `rawHeaders` as the upstream sent them (hop-by-hop fields dropped here). */
  head(status: number, statusText: string, rawHeaders: readonly string[], close: boolean): void {
    offloadWrites(this.#socket);
    const lines = serializeRawHeaders(rawHeaders, '');
    let h = `HTTP/1.1 ${status} ${statusText}\r\n${lines}`;
    const bodiless = this.#isHead || status === 204 || status === 304 || status < 200;
    this.#chunked = !bodiless && !keepsContentLength(rawHeaders);
    // HTTP/1.0 has no chunked framing: the close ends the body.
    if (this.#chunked && this.#http10) {
      this.#chunked = false;
      close = true;
    }
    if (this.#chunked) h += 'Transfer-Encoding: chunked\r\n';
    this.closeAfter = close;
    if (close) h += 'Connection: close\r\n';
    this.#pendingHead = `${h}\r\n`;
  }

  /** Writes a piece of body; false (and `resume` on 'drain') when the socket is full. */
  body(chunk: Buffer, resume: () => void): boolean {
    if (this.#pendingHead !== null) this.#writeWithHead(chunk, false);
    else if (this.#chunked) this.#writeChunk(chunk, false);
    else this.#socket.write(chunk);
    if (!this.#socket.writableNeedDrain) return true;
    this.#socket.once('drain', resume);
    return false;
  }

  /**
   * Writes the last piece of body (if any) and the end of the framing, with `trailers`
   * (`[name, value, …]`) when the body is chunked (a body with a length has nowhere to put them).
   */
  end(last: Buffer | null, trailers: readonly string[] | null = null): void {
    this.#trailers = trailers;
    if (this.#pendingHead !== null) this.#writeWithHead(last, true);
    else if (this.#chunked) this.#writeChunk(last, true);
    else if (last !== null) this.#socket.write(last);
  }

  /** A whole response the proxy decided on (`handleRequest` answered): head and body in one write. */
  answer(status: number, rawHeaders: readonly string[], body: string | Uint8Array, close: boolean): void {
    offloadWrites(this.#socket);
    this.#pendingHead = null;
    this.closeAfter = close;
    const b =
      typeof body === 'string'
        ? Buffer.from(body)
        : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const head =
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${serializeRawHeaders(rawHeaders, 'content-length')}` +
      `Content-Length: ${b.length}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
    this.#headSent = true;
    if (this.#isHead || b.length === 0) writeDirect(this.#socket, head, 'latin1');
    else writeDirect(this.#socket, Buffer.concat([Buffer.from(head, 'latin1'), b]), 'latin1');
  }

  /** Relays a 1xx (`100 Continue` to a client waiting to send its body); the final response follows. */
  informational(status: number, rawHeaders: readonly string[]): void {
    writeDirect(
      this.#socket,
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${serializeRawHeaders(rawHeaders, '')}\r\n`,
      'latin1',
    );
  }

  /** The end of a chunked body: the last chunk, trailers, the empty line. */
  #lastChunk(): string {
    const t = this.#trailers;
    if (t === null) return '0\r\n\r\n';
    let s = '0\r\n';
    for (let i = 0; i + 1 < t.length; i += 2) s += `${t[i]}: ${t[i + 1]}\r\n`;
    return `${s}\r\n`;
  }

  /** The proxy's own answer, or the socket destroyed when the upstream's head already left. */
  fail(status: number, body: string, close: boolean): void {
    if (this.#headSent) {
      this.#socket.destroy();
      return;
    }
    this.#pendingHead = null;
    this.closeAfter = close;
    writeDirect(
      this.#socket,
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        // The answer to HEAD has no body (its length is stated all the same).
        `Content-Length: ${Buffer.byteLength(body)}\r\n${close ? 'Connection: close\r\n' : ''}\r\n${this.#isHead ? '' : body}`,
      'utf8',
    );
  }

  /** Writes the held head with `body` (and the chunked framing), in one write when small. */
  #writeWithHead(body: Buffer | null, last: boolean): void {
    const head = this.#pendingHead as string;
    this.#pendingHead = null;
    this.#headSent = true;
    let prefix = head;
    let suffix = '';
    const n = body === null ? 0 : body.length;
    if (this.#chunked) {
      if (n > 0) {
        prefix += `${n.toString(16)}\r\n`;
        suffix = '\r\n';
      }
      if (last) suffix += this.#lastChunk();
    }
    const s = this.#socket;
    if (n === 0) {
      writeDirect(s, prefix + suffix, 'latin1');
      return;
    }
    if (n > COPY_LIMIT) {
      s.cork();
      s.write(prefix, 'latin1');
      s.write(body as Buffer);
      if (suffix !== '') s.write(suffix, 'latin1');
      s.uncork();
      return;
    }
    const out = Buffer.allocUnsafe(prefix.length + n + suffix.length);
    out.write(prefix, 0, 'latin1');
    (body as Buffer).copy(out, prefix.length);
    if (suffix !== '') out.write(suffix, prefix.length + n, 'latin1');
    writeDirect(s, out, 'latin1');
  }

  #writeChunk(chunk: Buffer | null, last: boolean): void {
    const s = this.#socket;
    if (chunk === null || chunk.length === 0) {
      if (last) s.write(this.#lastChunk(), 'latin1');
      return;
    }
    s.cork();
    s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    s.write(chunk);
    s.write(last ? `\r\n${this.#lastChunk()}` : '\r\n', 'latin1');
    s.uncork();
  }
}
