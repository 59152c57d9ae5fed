/**
 * Telling HTTP/2 with prior knowledge from HTTP/1.1 on one cleartext port. An HTTP/2 client
 * opens with a fixed 24-byte preface (RFC 9113 §3.4); any HTTP/1.1 request differs from it by
 * the fourth byte at the latest (no method is `PRI`), so we read only as far as needed.
 *
 * Ordering rule: the bytes read to decide are pushed back with `socket.unshift()` before the
 * promise settles, and the socket is left in its initial (not flowing, not paused) state, so the
 * next owner (the HTTP/1.1 parser or the HTTP/2 session) reads the stream from its first byte.
 */
import type { Socket } from 'node:net';

/** The HTTP/2 connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`. */
export const HTTP2_PREFACE: Buffer = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** What the first bytes of a cleartext connection said. */
export type PrefaceVerdict =
  /** The client sent the HTTP/2 preface. */
  | 'h2'
  /** Anything else: HTTP/1.x (or garbage, which the HTTP/1.1 parser rejects). */
  | 'http1'
  /** The client closed or failed before we could tell. */
  | 'closed'
  /** The client stayed silent (or too slow) past the timeout. */
  | 'timeout';

/**
 * Compares `bytes` with the preface: `'h2'` when they start with all of it, `'http1'` as soon
 * as one byte differs, `undefined` while they are a proper prefix of it.
 */
export function classifyPreface(bytes: Uint8Array): 'h2' | 'http1' | undefined {
  const n = Math.min(bytes.length, HTTP2_PREFACE.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== HTTP2_PREFACE[i]) return 'http1';
  return n === HTTP2_PREFACE.length ? 'h2' : undefined;
}

/**
 * Reads the first bytes of `socket` until they tell HTTP/2 prior knowledge from anything else,
 * pushes them back, and resolves with the verdict. Never rejects: on error or end of stream it
 * resolves `'closed'`, on timeout `'timeout'`, and leaves the socket to the caller (who
 * destroys it).
 */
export function sniffHttp2Preface(socket: Socket, timeoutMs: number): Promise<PrefaceVerdict> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    function finish(verdict: PrefaceVerdict): void {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onClosed);
      socket.off('close', onClosed);
      socket.off('error', onClosed);
      // Removing the last 'readable' listener returns the stream to its initial flowing state
      // (null), so a later 'data' listener or a native consumer starts it as usual.
      if ((verdict === 'h2' || verdict === 'http1') && length > 0)
        socket.unshift(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
      resolve(verdict);
    }
    function onClosed(): void {
      finish('closed');
    }
    function onReadable(): void {
      let chunk: Buffer | null = socket.read() as Buffer | null;
      while (chunk !== null) {
        chunks.push(chunk);
        length += chunk.length;
        chunk = socket.read() as Buffer | null;
      }
      const verdict = classifyPreface(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
      if (verdict !== undefined) finish(verdict);
    }
    socket.on('readable', onReadable);
    socket.once('end', onClosed);
    socket.once('close', onClosed);
    socket.once('error', onClosed);
  });
}
