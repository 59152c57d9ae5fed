/**
 * Passive health and candidate parsing of `selectUpstream`, without sockets: ejection after
 * consecutive failures, the cooldown, a success resetting the count, `connectFirst`'s order and
 * retry rules, and `parseCandidate` on valid, malformed and random input.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SocketAddr } from '../context/contexts.ts';
import { isOxyError, OXY_ERR, OxyError } from '../errors.ts';
import { connectFirst, parseCandidate, UpstreamHealth } from './upstream-select.ts';

test('an upstream is ejected after `failures` in a row, for the cooldown; a success resets the count', () => {
  const h = new UpstreamHealth(3, 1000);
  h.failed('a:1', 0);
  h.failed('a:1', 1);
  h.succeeded('a:1');
  h.failed('a:1', 2);
  h.failed('a:1', 3);
  assert.equal(h.ejected('a:1', 4), false, 'the success broke the run');
  h.failed('a:1', 5);
  assert.equal(h.ejected('a:1', 6), true);
  assert.equal(h.ejected('a:1', 1004), true);
  assert.equal(h.ejected('a:1', 1005), false, 'the cooldown is over');
  assert.equal(h.ejected('b:1', 6), false, 'per upstream');
});

test('parseCandidate reads host:port and [v6]:port, and refuses anything else with a typed error', () => {
  assert.deepEqual(parseCandidate('10.0.0.1:80'), { host: '10.0.0.1', port: 80 });
  assert.deepEqual(parseCandidate('backend.example:8443'), { host: 'backend.example', port: 8443 });
  assert.deepEqual(parseCandidate('[::1]:443'), { host: '::1', port: 443 });
  for (const bad of [
    '',
    'host',
    'host:',
    ':80',
    'host:0',
    'host:65536',
    '::1:80',
    '[nope]:80',
    'a b:1',
    '[::1]',
  ]) {
    assert.throws(
      () => parseCandidate(bad),
      (e: unknown) => isOxyError(e) && e.code === OXY_ERR.INVALID_DECISION,
      bad,
    );
  }
});

test('parseCandidate fuzz: random and mutated inputs throw nothing but the typed error', () => {
  const seeds = ['10.0.0.1:80', '[2001:db8::1]:443', 'a.example:1'];
  const alphabet = 'ab09.:[]-_ %\u0000\u00e9';
  const deadline = Date.now() + 300;
  let n = 0;
  while (Date.now() < deadline) {
    let s: string;
    if (n % 2 === 0) {
      s = Array.from({ length: Math.floor(Math.random() * 24) }, () =>
        alphabet.charAt(Math.floor(Math.random() * alphabet.length)),
      ).join('');
    } else {
      const seed = seeds[n % seeds.length] as string;
      const i = Math.floor(Math.random() * (seed.length + 1));
      s = seed.slice(0, i) + alphabet.charAt(Math.floor(Math.random() * alphabet.length)) + seed.slice(i + 1);
    }
    try {
      const a = parseCandidate(s);
      assert.ok(a.port >= 1 && a.port <= 65535 && a.host !== '');
    } catch (e) {
      assert.ok(
        isOxyError(e) && e.code === OXY_ERR.INVALID_DECISION,
        `unexpected ${String(e)} for ${JSON.stringify(s)}`,
      );
    }
    n++;
  }
  assert.ok(n > 100);
});

const A: SocketAddr = { host: '10.0.0.1', port: 1 };
const B: SocketAddr = { host: '10.0.0.2', port: 1 };
const refused = (): OxyError => new OxyError(OXY_ERR.CONNECT_REFUSED, 'refused', { source: 'upstream' });

test('connectFirst: in order, past connect failures, skipping the ejected; a block is not retried', async () => {
  const h = new UpstreamHealth(1, 60_000);
  const seen: string[] = [];
  const got = await connectFirst(h, [A, B], async (c) => {
    seen.push(c.host);
    if (c === A) throw refused();
    return c.host;
  });
  assert.equal(got, '10.0.0.2');
  assert.deepEqual(seen, ['10.0.0.1', '10.0.0.2']);
  seen.length = 0;
  await connectFirst(h, [A, B], async (c) => {
    seen.push(c.host);
    return c.host;
  });
  assert.deepEqual(seen, ['10.0.0.2'], 'A is ejected');
  await assert.rejects(
    connectFirst(new UpstreamHealth(3, 1), [A, B], async () => {
      throw new OxyError(OXY_ERR.EGRESS_BLOCKED, 'no', { source: 'internal' });
    }),
    (e: unknown) => isOxyError(e) && e.code === OXY_ERR.EGRESS_BLOCKED,
  );
  await assert.rejects(
    connectFirst(new UpstreamHealth(3, 1), [], async () => 'x'),
    (e: unknown) => isOxyError(e) && e.code === OXY_ERR.EGRESS_BLOCKED,
  );
});
