/**
 * The HTTP/2 form of a serialised request head (RFC 9113 §8.2.2, §8.2.3, §8.3.1): pseudo-fields,
 * connection-specific fields removed (also those `Connection` names), `Host` as `:authority`,
 * `te: trailers` only, cookies joined, repeated fields kept; and a time-bounded fuzz run.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { randomUint32 } from '../../testing/fuzz.ts';
import { http2HeadOf, rawWithoutPseudo } from './request-head.ts';

describe('http2HeadOf', () => {
  test('pseudo-fields from the request line and Host; connection-specific fields dropped', () => {
    const head =
      'POST /a?b=1 HTTP/1.1\r\nAccept: */*\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n' +
      'Keep-Alive: timeout=5\r\nProxy-Connection: close\r\nTransfer-Encoding: chunked\r\n' +
      'Upgrade: h2c\r\nHTTP2-Settings: AAA\r\nTE: gzip, trailers\r\nHost: origin.test:8443\r\n\r\n';
    const { method, headers } = http2HeadOf(head);
    assert.equal(method, 'POST');
    assert.deepEqual(
      { ...headers },
      {
        ':method': 'POST',
        ':scheme': 'https',
        ':path': '/a?b=1',
        ':authority': 'origin.test:8443',
        accept: '*/*',
        te: 'trailers',
      },
    );
  });

  test('cookies are joined with "; ", other repeated fields kept apart, names lower-cased', () => {
    const { headers } = http2HeadOf(
      'GET / HTTP/1.1\r\nCookie: a=1\r\nX-A: 1\r\nCOOKIE: b=2\r\nx-a: 2\r\nx-a: 3\r\nContent-Length: 0\r\nHost: h\r\n\r\n',
    );
    assert.equal(headers.cookie, 'a=1; b=2');
    assert.deepEqual(headers['x-a'], ['1', '2', '3']);
    assert.equal(headers['content-length'], '0');
  });

  test('an absolute-form target keeps its path; OPTIONS * stays *', () => {
    assert.equal(
      http2HeadOf('GET https://h.test:1/p?q HTTP/1.1\r\nHost: h.test:1\r\n\r\n').headers[':path'],
      '/p?q',
    );
    assert.equal(http2HeadOf('GET https://h.test HTTP/1.1\r\n\r\n').headers[':path'], '/');
    assert.equal(http2HeadOf('OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n').headers[':path'], '*');
  });

  test('rawWithoutPseudo drops :status and keeps the order', () => {
    assert.deepEqual(rawWithoutPseudo([':status', '200', 'a', '1', 'b', '2', 'a', '3']), [
      'a',
      '1',
      'b',
      '2',
      'a',
      '3',
    ]);
  });

  test('fuzz: random and mutated heads never throw', () => {
    const seed = 'GET /x HTTP/1.1\r\nHost: h\r\nConnection: a, b\r\nCookie: c\r\n\r\n';
    const alphabet = 'GET /:\r\n ,aHostConnection;-*';
    const next = randomUint32(0x9e3779b9);
    const deadline = performance.now() + 300;
    let runs = 0;
    while (performance.now() < deadline) {
      runs++;
      let s = seed;
      if (next() % 2 === 0) {
        const chars: string[] = [];
        const n = next() % 80;
        for (let i = 0; i < n; i++) chars.push(alphabet[next() % alphabet.length] as string);
        s = chars.join('');
      } else {
        for (let k = next() % 6; k >= 0; k--) {
          const at = next() % (s.length + 1);
          s = s.slice(0, at) + (alphabet[next() % alphabet.length] as string) + s.slice(at + (next() % 3));
        }
      }
      const { headers } = http2HeadOf(s);
      assert.equal(headers[':scheme'], 'https');
      assert.equal(headers.connection, undefined);
    }
    assert.ok(runs > 100);
  });
});
