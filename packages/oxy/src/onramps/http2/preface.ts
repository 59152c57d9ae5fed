/**
 * Telling HTTP/2 with prior knowledge from HTTP/1.1 on one cleartext port. An HTTP/2 client
 * opens with a fixed 24-byte preface (RFC 9113 §3.4); any HTTP/1.1 request differs from it by
 * the fourth byte at the latest (no method is `PRI`), so a reader needs only as many bytes as
 * it takes to tell. The lean HTTP/1.1 on-ramp (`http1/lean.ts`) asks, and gives the bytes it
 * read back to whichever on-ramp the answer picks.
 */

/** The HTTP/2 connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`. */
export const HTTP2_PREFACE: Buffer = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Compares `bytes` with the preface: `'h2'` when they start with all of it, `'http1'` as soon
 * as one byte differs, `undefined` while they are a proper prefix of it.
 */
export function classifyPreface(bytes: Uint8Array): 'h2' | 'http1' | undefined {
  const n = Math.min(bytes.length, HTTP2_PREFACE.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== HTTP2_PREFACE[i]) return 'http1';
  return n === HTTP2_PREFACE.length ? 'h2' : undefined;
}
