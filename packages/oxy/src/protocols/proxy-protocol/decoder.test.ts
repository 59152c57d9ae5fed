import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type DecodeStep,
  encodeV1,
  encodeV2,
  type ProxyHeader,
  ProxyHeaderDecoder,
  ProxyProtocolError,
  type ProxyReason,
} from './index.ts';

function rejects(reason: ProxyReason) {
  return (e: unknown) => e instanceof ProxyProtocolError && e.reason === reason;
}

const addresses = {
  family: 'inet6' as const,
  source: { host: '2001:db8::7', port: 40000 },
  destination: { host: '2001:db8::1', port: 443 },
};
const v2 = Buffer.from(
  encodeV2(
    {
      addresses,
      tlvs: [
        { type: 'authority', value: 'example.com' },
        { type: 'unique_id', value: new Uint8Array(Buffer.from('id-1')) },
        { type: 'ssl', client: 1, verify: 0, version: 'TLSv1.3', unknown: [] },
      ],
    },
    { crc32c: true },
  ),
);
const v1 = Buffer.from(encodeV1({ addresses }));
const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n');

/** Feeds `pieces` and returns the final step and every step before it. */
function feed(pieces: Uint8Array[]): { steps: DecodeStep[]; decoder: ProxyHeaderDecoder } {
  const decoder = new ProxyHeaderDecoder();
  const steps = pieces.map((p) => decoder.push(p));
  return { steps, decoder };
}

function done(step: DecodeStep | undefined): { header: ProxyHeader; rest: Uint8Array } {
  assert.equal(step?.kind, 'done');
  return step as { kind: 'done'; header: ProxyHeader; rest: Uint8Array };
}

describe('ProxyHeaderDecoder (a header split across reads)', () => {
  for (const [name, header] of [
    ['v1', v1],
    ['v2 with TLVs and CRC32C', v2],
  ] as const) {
    it(`decodes ${name} split at every point into two reads, and a byte at a time`, () => {
      const whole = Buffer.concat([header, payload]);
      for (let cut = 1; cut < whole.length; cut++) {
        const decoder = new ProxyHeaderDecoder();
        const first = decoder.push(whole.subarray(0, cut));
        const last = first.kind === 'more' ? decoder.push(whole.subarray(cut)) : first;
        // Done as soon as the header is complete; the rest is what followed it in that read.
        if (cut >= header.length) {
          const d = done(first);
          assert.equal(d.header.length, header.length);
          assert.deepEqual(Buffer.from(d.rest), whole.subarray(header.length, cut));
        } else {
          assert.equal(first?.kind, 'more');
          const d = done(last);
          assert.deepEqual(Buffer.from(d.rest), payload);
        }
      }
      const bytes = [...header].map((x) => Uint8Array.of(x));
      const { steps } = feed(bytes);
      assert.equal(steps.filter((s) => s.kind === 'more').length, header.length - 1);
      const d = done(steps.at(-1));
      assert.deepEqual(d.header.addresses, addresses);
      assert.equal(d.rest.length, 0);
    });
  }

  it('copies what it holds, so a reused read buffer cannot change the header', () => {
    const decoder = new ProxyHeaderDecoder();
    const chunk = Buffer.from(v1.subarray(0, 20));
    assert.equal(decoder.push(chunk).kind, 'more');
    chunk.fill(0x41);
    const d = done(decoder.push(v1.subarray(20)));
    assert.deepEqual(d.header.addresses, addresses);
  });

  it('refuses on the first byte a stream that is not PROXY (v1 or v2)', () => {
    for (const first of ['G', '\x16', '\r\n\r\n\x01']) {
      const decoder = new ProxyHeaderDecoder();
      assert.throws(() => decoder.push(Buffer.from(first, 'latin1')), rejects('bad_signature'));
      // The failure sticks.
      assert.throws(() => decoder.push(v1), rejects('bad_signature'));
    }
  });

  it('refuses a v2 length over the limit from the fixed part alone', () => {
    const decoder = new ProxyHeaderDecoder({ maxV2Length: 64 });
    assert.equal(decoder.push(v2.subarray(0, 15)).kind, 'more');
    assert.throws(() => decoder.push(v2.subarray(15, 16)), rejects('too_long'));
  });

  it('never holds more than 106 bytes of a v1 line', () => {
    const decoder = new ProxyHeaderDecoder();
    decoder.push(Buffer.from('PROXY UNKNOWN '));
    let error: unknown;
    for (let i = 0; i < 200 && error === undefined; i++) {
      try {
        decoder.push(Buffer.from('x'));
        assert.ok(decoder.buffered <= 106);
      } catch (e) {
        error = e;
      }
    }
    assert.ok(rejects('too_long')(error));
    assert.equal(decoder.buffered, 0);
  });

  it('reports a stream that ends inside the header as truncated', () => {
    const decoder = new ProxyHeaderDecoder();
    decoder.push(v2.subarray(0, 30));
    assert.throws(() => decoder.end(), rejects('truncated'));
    assert.throws(() => new ProxyHeaderDecoder().end(), rejects('truncated'));
    const ok = new ProxyHeaderDecoder();
    ok.push(v1);
    ok.end(); // nothing to say after a header
    assert.throws(() => ok.push(payload), TypeError);
  });
});
