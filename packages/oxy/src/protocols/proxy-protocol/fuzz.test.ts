/**
 * Fuzz test of the PROXY v1/v2 decoders and the SPP decoder: random valid headers (which must
 * decode to what was encoded), mutations of them (bit flips, byte changes, cuts, insertions),
 * and random bytes; each fed whole and in random splits. The only error allowed is the typed
 * ProxyProtocolError, the one-shot and split decoders must agree, and the heap must stay
 * bounded. At least 100,000 cases, stopped by a time budget. `PP_FUZZ_SEED` replays a run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { randomUint32 } from '../../testing/fuzz.ts';
import {
  decodeProxyHeader,
  decodeSpp,
  encodeProxyHeader,
  encodeSpp,
  type ProxyAddresses,
  type ProxyHeader,
  ProxyHeaderDecoder,
  type ProxyHeaderInit,
  ProxyProtocolError,
  type ProxyTlv,
} from './index.ts';

const MIN_CASES = 100_000;
/** A safety stop for a loaded machine; 100,000 cases take about 3 s of CPU. */
const BUDGET_MS = 30_000;
const MAX_V2 = 2048;

function rng(seed: number) {
  const u32 = randomUint32(seed);
  const next = () => u32() / 0x100000000;
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = int(256);
    return out;
  };
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, bytes, pick };
}
type Rng = ReturnType<typeof rng>;

function ipv4(r: Rng) {
  return `${r.int(256)}.${r.int(256)}.${r.int(256)}.${r.int(256)}`;
}
function ipv6(r: Rng) {
  return Array.from({ length: 8 }, () => (r.next() < 0.4 ? '0' : r.int(0x10000).toString(16))).join(':');
}
function text(r: Rng, n: number, max = 0x7e) {
  return String.fromCharCode(...Array.from({ length: n }, () => 0x20 + r.int(max - 0x20 + 1)));
}

function randomAddresses(r: Rng, v1: boolean): ProxyAddresses | null {
  const k = r.int(v1 ? 3 : 4);
  const port = () => r.int(65536);
  if (k === 0)
    return {
      family: 'inet',
      source: { host: ipv4(r), port: port() },
      destination: { host: ipv4(r), port: port() },
    };
  if (k === 1)
    return {
      family: 'inet6',
      source: { host: ipv6(r), port: port() },
      destination: { host: ipv6(r), port: port() },
    };
  if (k === 3) return { family: 'unix', source: `/tmp/${text(r, r.int(40), 0x7a)}`, destination: '' };
  return null;
}

function randomTlvs(r: Rng): ProxyTlv[] {
  const out: ProxyTlv[] = [];
  for (let n = r.int(6); n > 0; n--) {
    switch (r.int(8)) {
      case 0:
        out.push({ type: 'alpn', value: r.pick(['h2', 'http/1.1', text(r, r.int(20), 0xff)]) });
        break;
      case 1:
        out.push({ type: 'authority', value: `${text(r, r.int(30))}.example` });
        break;
      case 2:
        out.push({ type: 'noop', value: r.bytes(r.int(8)) });
        break;
      case 3:
        out.push({ type: 'unique_id', value: r.bytes(r.int(129)) });
        break;
      case 4:
        out.push({
          type: 'ssl',
          client: r.int(8),
          verify: r.int(2),
          version: r.pick([undefined, 'TLSv1.2', 'TLSv1.3']),
          cn: r.next() < 0.5 ? undefined : 'client ✓',
          cipher: r.next() < 0.5 ? undefined : 'TLS_AES_128_GCM_SHA256',
          keyAlg: r.next() < 0.5 ? undefined : 'RSA2048',
          clientCert: r.next() < 0.8 ? undefined : r.bytes(r.int(100)),
          unknown: r.next() < 0.8 ? [] : [{ code: 0x29 + r.int(6), value: r.bytes(r.int(5)) }],
        });
        break;
      case 5:
        out.push({ type: 'netns', value: text(r, r.int(16)) });
        break;
      default:
        out.push({ type: 'unknown', code: 0xe0 + r.int(32), value: r.bytes(r.int(10)) });
    }
  }
  return out;
}

function randomHeader(r: Rng): { bytes: Uint8Array; init: ProxyHeaderInit; version: 1 | 2 } {
  const version = r.next() < 0.3 ? 1 : 2;
  const addresses = randomAddresses(r, version === 1);
  const init: ProxyHeaderInit = {
    command: version === 2 && r.next() < 0.1 ? 'local' : 'proxy',
    transport: version === 1 ? 'stream' : r.pick(['stream', 'dgram'] as const),
    addresses,
    tlvs: version === 1 ? [] : randomTlvs(r),
  };
  return {
    bytes: encodeProxyHeader(init, { version, crc32c: version === 2 && r.next() < 0.5 }),
    init,
    version,
  };
}

function mutate(r: Rng, input: Uint8Array): Uint8Array {
  let b = Buffer.from(input);
  for (let n = 1 + r.int(3); n > 0; n--) {
    const at = r.int(b.length + 1);
    switch (r.int(5)) {
      case 0:
        if (at < b.length) b[at]! ^= 1 << r.int(8);
        break;
      case 1:
        if (at < b.length) b[at] = r.pick([0, 0x0d, 0x0a, 0x20, 0xff, r.int(256)]);
        break;
      case 2:
        b = b.subarray(0, at);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(4)), b.subarray(at)]);
        break;
      default:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.int(4))]);
    }
  }
  return b;
}

type Outcome = { ok: true; length: number; summary: string } | { ok: false; reason: string };

/** What must agree between the two decoders (cheaper than a deep comparison of the bytes). */
function summary(h: ProxyHeader): string {
  return `${h.version}|${h.command}|${h.family}|${h.transport}|${JSON.stringify(h.addresses)}|${h.tlvs.map((t) => t.type).join(',')}`;
}

function typed(e: unknown): { ok: false; reason: string } {
  if (!(e instanceof ProxyProtocolError)) throw e; // anything else is a crash: fail the test
  return { ok: false, reason: e.reason };
}

function oneShot(bytes: Uint8Array): Outcome {
  try {
    const { header } = decodeProxyHeader(bytes, { maxV2Length: MAX_V2 });
    return {
      ok: true,
      length: header.length,
      summary: summary(header),
    };
  } catch (e) {
    return typed(e);
  }
}

function split(r: Rng, bytes: Uint8Array): Outcome {
  const decoder = new ProxyHeaderDecoder({ maxV2Length: MAX_V2 });
  try {
    let at = 0;
    while (at < bytes.length) {
      // Tiny reads only on short inputs: byte-at-a-time over 2 KB is quadratic and proves nothing new.
      const end = Math.min(bytes.length, at + 1 + r.int(bytes.length < 200 && r.next() < 0.3 ? 4 : 200));
      const step = decoder.push(bytes.subarray(at, end));
      assert.ok(decoder.buffered <= MAX_V2 + 200, 'the decoder holds no more than its limit');
      if (step.kind === 'done') {
        const header = step.header;
        return {
          ok: true,
          length: header.length,
          summary: summary(header),
        };
      }
      at = end;
    }
    decoder.end();
    assert.fail('end() after an incomplete header must throw');
  } catch (e) {
    return typed(e);
  }
}

describe('fuzz: PROXY and SPP decoders', () => {
  it(`survive at least ${MIN_CASES} random and mutated headers with typed errors only`, () => {
    const seed = Number(process.env['PP_FUZZ_SEED'] ?? Date.now() % 0xffffffff);
    const r = rng(seed);
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    const counts = { cases: 0, valid: 0, accepted: 0, rejected: 0 };
    while (counts.cases < MIN_CASES && performance.now() - started < BUDGET_MS) {
      counts.cases++;
      let input: Uint8Array;
      const kind = r.int(10);
      if (kind < 2) {
        const h = randomHeader(r);
        if (h.bytes.length > MAX_V2) continue;
        // A valid header decodes to what was encoded (addresses compared in their normal form).
        const got = decodeProxyHeader(h.bytes, { maxV2Length: MAX_V2 }).header;
        assert.equal(got.length, h.bytes.length, `seed ${seed}`);
        if (h.init.command !== 'local' && got.addresses?.family !== 'unix') {
          assert.equal(got.addresses?.family ?? null, h.init.addresses?.family ?? null, `seed ${seed}`);
        }
        counts.valid++;
        input = h.bytes;
      } else if (kind < 8) {
        input = mutate(r, randomHeader(r).bytes);
      } else if (kind < 9) {
        input = Buffer.concat([
          Buffer.from(r.pick(['PROXY ', '\r\n\r\n\0\r\nQUIT\n', ''])),
          r.bytes(r.int(120)),
        ]);
      } else {
        const spp = Buffer.concat([
          encodeSpp({ host: ipv4(r), port: r.int(65536) }, { host: ipv6(r), port: 1 }),
          r.bytes(4),
        ]);
        try {
          decodeSpp(r.next() < 0.5 ? mutate(r, spp) : r.bytes(r.int(60)));
        } catch (e) {
          typed(e);
        }
        continue;
      }
      const whole = oneShot(input);
      const pieces = split(r, input);
      if (whole.ok) counts.accepted++;
      else counts.rejected++;
      // The split decoder agrees with the one-shot one, except that it waits where input ends early.
      if (!(whole.ok === false && whole.reason === 'truncated')) {
        assert.deepEqual(pieces, whole, `seed ${seed}, input ${Buffer.from(input).toString('hex')}`);
      } else {
        assert.equal(pieces.ok, false, `seed ${seed}`);
      }
    }
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(counts.cases >= MIN_CASES, `only ${counts.cases} cases in ${BUDGET_MS} ms (seed ${seed})`);
    assert.ok(counts.accepted > 1000 && counts.rejected > 1000, JSON.stringify(counts));
    assert.ok(heapGrowth < 128 * 1024 * 1024, `heap grew by ${heapGrowth} bytes`);
  });
});
