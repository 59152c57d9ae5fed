/**
 * Data-loss prevention for uploads: a request body that contains one of the configured
 * patterns is stopped before it all reaches the origin, and the client gets 403. The body is
 * scanned as it streams (`HttpBodyHook`), never held whole: each chunk is searched together
 * with the last `longest pattern - 1` bytes of the one before, so a pattern split across two
 * chunks (two TCP reads, two HTTP/2 DATA frames) is still found.
 *
 * The same app applies to requests inside intercepted HTTPS: intercepted requests go through
 * the same request and body hooks as plain ones.
 */
import { s } from 'foundations/settings';
import { type BodyFilter, BodyVerdict, defineApp } from 'oxy';

const DlpSettings = s.object('The data-loss prevention rules.', {
  patterns: s.list(
    'Byte strings no upload may contain (matched without regard to ASCII case).',
    s.str('A pattern.', ''),
    ['CONFIDENTIAL'],
  ),
  status: s.int('The status a blocked upload is answered with.', 403, { min: 400, max: 599 }),
});

/**
 * A filter that stops a body as soon as it contains one of `patterns` (lower-case ASCII), even
 * when the match straddles two chunks. It observes only: the body passes unchanged.
 */
export function dlpFilter(patterns: readonly Buffer[], status: number): BodyFilter {
  const keep = Math.max(0, ...patterns.map((p) => p.length)) - 1;
  let tail = Buffer.alloc(0);
  return {
    onChunk(chunk) {
      const window = lower(tail.length === 0 ? chunk : Buffer.concat([tail, chunk]));
      for (const p of patterns) {
        if (window.includes(p))
          return BodyVerdict.stop(status, 'upload blocked: it contains a protected pattern');
      }
      // What a match starting in this chunk and ending in the next would need.
      tail = Buffer.from(window.subarray(Math.max(0, window.length - keep)));
      return undefined;
    },
  };
}

/** A copy of `b` with ASCII letters lower-cased (bytes ≥ 0x80 unchanged). */
function lower(b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(b.length);
  for (let i = 0; i < b.length; i++) {
    const c = b[i] as number;
    out[i] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
  }
  return out;
}

export const app = defineApp({
  name: 'dlp-upload',
  version: '0.1.0',
  description: 'Forward proxy that blocks uploads containing protected patterns',
  settings: { app: DlpSettings },
  start(settings) {
    const patterns = settings.app.patterns.filter((p) => p !== '').map((p) => lower(Buffer.from(p)));
    const status = settings.app.status;
    return {
      httpBody: {
        // Only request bodies are scanned; a response body costs nothing.
        getRequestBodyFilter: () => (patterns.length === 0 ? undefined : dlpFilter(patterns, status)),
      },
    };
  },
});
