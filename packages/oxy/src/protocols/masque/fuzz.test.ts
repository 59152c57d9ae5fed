/**
 * Fuzzes the MASQUE string parsers: template parsing and matching, the request checks, target
 * validation and the Structured Fields readers, on random and mutated inputs. Parsers of
 * request data must never throw (they answer 400 or read as absent); the template parser may
 * throw only `OXY_ERR_MASQUE_TEMPLATE`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { randomFloat } from '../../testing/fuzz.ts';
import { parseCapsuleProtocol, parseProxyStatus } from './proxy-status.ts';
import { checkMasqueRequest } from './request.ts';
import { checkIpTarget, checkTargetHost } from './targets.ts';
import { DEFAULT_TEMPLATES, matchUriTemplate, parseUriTemplate } from './template.ts';

const CASES = 30_000;
const TIME_LIMIT_MS = 20_000;

const ALPHABET = '/{}?&=,%:.*;+#!-_~09afAF3 "\\\t\u00e9\u0000';
const samples = [
  '/.well-known/masque/udp/192.0.2.6/443/',
  '/.well-known/masque/udp/2001%3Adb8%3A%3A42/443/',
  '/.well-known/masque/ip/192.0.2.0%2F24/17/',
  '/masque?h=example.com&p=53',
  DEFAULT_TEMPLATES['connect-udp'],
  '/masque{?target_host,target_port}',
  '/x/{target_host,target_port}/y?q={ipproto}{&target}',
  'oxy; error=dns_error; rcode="NXDOMAIN"; details="x \\" y"',
  '?1;a=2',
];

function mutate(rand: () => number): string {
  if (rand() < 0.3) {
    let s = '';
    const n = Math.floor(rand() * 40);
    for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)];
    return s;
  }
  const chars = [...samples[Math.floor(rand() * samples.length)]!];
  const edits = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(rand() * (chars.length + 1));
    const c = ALPHABET[Math.floor(rand() * ALPHABET.length)]!;
    const r = rand();
    if (r < 0.4) chars.splice(at, 1, c);
    else if (r < 0.7) chars.splice(at, 0, c);
    else chars.splice(at, 1);
  }
  return chars.join('');
}

describe('MASQUE parser fuzz', () => {
  it(`survives ${CASES} random and mutated templates, paths and fields`, () => {
    const rand = randomFloat(0x9298);
    const udp = parseUriTemplate(DEFAULT_TEMPLATES['connect-udp'], 'connect-udp');
    const ip = parseUriTemplate(DEFAULT_TEMPLATES['connect-ip'], 'connect-ip');
    const started = Date.now();
    let templatesAccepted = 0;
    let requestsAccepted = 0;
    let i = 0;
    for (; i < CASES && Date.now() - started < TIME_LIMIT_MS; i++) {
      const s = mutate(rand);
      try {
        const t = parseUriTemplate(s, rand() < 0.5 ? 'connect-udp' : 'connect-ip');
        templatesAccepted++;
        matchUriTemplate(t, mutate(rand));
      } catch (e) {
        assert.ok(
          isOxyError(e) && e.code === 'OXY_ERR_MASQUE_TEMPLATE',
          `case ${i} ${JSON.stringify(s)}: ${String(e)}`,
        );
      }
      const r = checkMasqueRequest(
        {
          httpVersion: rand() < 0.5 ? '2' : '1.1',
          method: rand() < 0.5 ? 'CONNECT' : 'GET',
          protocol: rand() < 0.5 ? 'connect-udp' : 'connect-ip',
          scheme: 'https',
          authority: 'proxy.test',
          path: s,
          headers: {
            host: 'proxy.test',
            connection: 'upgrade',
            upgrade: 'connect-udp',
            'capsule-protocol': mutate(rand),
          },
        },
        { udp, ip },
      );
      if (r.ok) requestsAccepted++;
      else assert.ok(r.refusal.status === 400 || r.refusal.status === 501, `case ${i}: ${r.refusal.status}`);
      checkTargetHost(s);
      checkIpTarget(s);
      parseCapsuleProtocol(s);
      for (const entry of parseProxyStatus(s)) assert.equal(typeof entry.proxy, 'string');
    }
    assert.equal(i, CASES, `only ${i} cases ran within ${TIME_LIMIT_MS} ms`);
    assert.ok(
      templatesAccepted > CASES / 20 && requestsAccepted > CASES / 1000,
      `${templatesAccepted} templates, ${requestsAccepted} requests`,
    );
  });
});
