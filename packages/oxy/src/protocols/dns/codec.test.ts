import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import {
  DNS_CLASS_IN,
  DNS_RCODE,
  DNS_TYPE,
  type DnsMessage,
  decodeDnsMessage,
  encodeAddress,
  encodeDnsMessage,
  encodeName,
} from './codec.ts';

const header = {
  id: 0xbeef,
  qr: true,
  opcode: 0,
  aa: true,
  tc: false,
  rd: true,
  ra: true,
  rcode: DNS_RCODE.NOERROR,
};

function isMalformed(pattern: RegExp) {
  return (e: unknown) =>
    isOxyError(e) && e.code === 'OXY_ERR_DNS_MALFORMED' && pattern.test((e as Error).message);
}

describe('DNS codec', () => {
  it('round-trips a response with A and AAAA answers', () => {
    const msg: DnsMessage = {
      header,
      questions: [{ name: 'www.example.com', type: DNS_TYPE.AAAA, class: DNS_CLASS_IN }],
      answers: [
        {
          name: 'www.example.com',
          type: DNS_TYPE.A,
          class: DNS_CLASS_IN,
          ttl: 300,
          data: new Uint8Array(),
          address: '192.0.2.1',
        },
        {
          name: 'www.example.com',
          type: DNS_TYPE.AAAA,
          class: DNS_CLASS_IN,
          ttl: 0xffffffff,
          data: new Uint8Array(),
          address: '2001:db8::1',
        },
      ],
      authorities: [],
      additionals: [],
    };
    const decoded = decodeDnsMessage(encodeDnsMessage(msg));
    assert.deepEqual(decoded.header, header);
    assert.deepEqual(decoded.questions, msg.questions);
    assert.deepEqual(
      decoded.answers.map((r) => [r.name, r.type, r.ttl, r.address]),
      [
        ['www.example.com', 1, 300, '192.0.2.1'],
        ['www.example.com', 28, 0xffffffff, '2001:db8::1'],
      ],
    );
  });

  it('decodes the RFC 1035 §4.1.4 compression example (F.ISI.ARPA, FOO.F.ISI.ARPA, ARPA)', () => {
    // Header, then a question for F.ISI.ARPA at offset 12, then answers whose names point back.
    const q = Buffer.concat([encodeName('F.ISI.ARPA'), Buffer.from([0, 1, 0, 1])]);
    const rr = (name: Buffer) =>
      Buffer.concat([name, Buffer.from([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1])]);
    const fooPtr = Buffer.from([3, 0x46, 0x4f, 0x4f, 0xc0, 12]); // FOO + pointer to F.ISI.ARPA
    const arpaPtr = Buffer.from([0xc0, 12 + 6]); // ARPA starts at 12 + len("\x01F\x03ISI")
    const head = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
    const msg = decodeDnsMessage(Buffer.concat([head, q, rr(fooPtr), rr(arpaPtr)]));
    assert.equal(msg.questions[0]?.name, 'F.ISI.ARPA');
    assert.deepEqual(
      msg.answers.map((r) => [r.name, r.address]),
      [
        ['FOO.F.ISI.ARPA', '10.0.0.1'],
        ['ARPA', '10.0.0.1'],
      ],
    );
  });

  it('formats IPv6 answers the RFC 5952 way', () => {
    for (const a of ['::', '::1', '2001:db8::', 'fe80::1:2', '2001:db8:0:1:1:1:1:1', '1:0:0:2::3']) {
      const rr = { name: 'x', type: DNS_TYPE.AAAA, class: 1, ttl: 1, data: new Uint8Array(), address: a };
      const out = decodeDnsMessage(
        encodeDnsMessage({ header, questions: [], answers: [rr], authorities: [], additionals: [] }),
      );
      assert.equal(out.answers[0]?.address, a);
    }
    assert.deepEqual(
      [...encodeAddress('::ffff:1.2.3.4')],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
    );
  });

  it('rejects names it cannot encode', () => {
    assert.throws(() => encodeName(`${'a'.repeat(64)}.com`), /1 to 63 bytes/);
    assert.throws(() => encodeName(Array(60).fill('abcd').join('.')), /longer than 255/);
    assert.throws(() => encodeName('a..b'), /1 to 63 bytes/);
  });

  describe('malformed input', () => {
    const withQuestion = (name: Buffer) =>
      Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), name, Buffer.from([0, 1, 0, 1])]);

    it('truncated header', () => {
      assert.throws(() => decodeDnsMessage(Buffer.alloc(11)), isMalformed(/header needs 12 bytes, got 11/));
      assert.throws(() => decodeDnsMessage(Buffer.alloc(0)), isMalformed(/got 0/));
    });

    it('question count larger than the message', () => {
      assert.throws(
        () => decodeDnsMessage(Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])),
        isMalformed(/name truncated at byte 12/),
      );
      assert.throws(
        () => decodeDnsMessage(withQuestion(encodeName('a')).subarray(0, -1)),
        isMalformed(/question truncated/),
      );
    });

    it('bad label length byte (reserved 0x40/0x80 prefixes)', () => {
      assert.throws(
        () => decodeDnsMessage(withQuestion(Buffer.from([0x40, 0]))),
        isMalformed(/bad label length byte 0x40 at byte 12/),
      );
      assert.throws(() => decodeDnsMessage(withQuestion(Buffer.from([0x80, 0]))), isMalformed(/0x80/));
    });

    it('label running past the end', () => {
      assert.throws(
        () =>
          decodeDnsMessage(
            Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([10, 0x61])]),
          ),
        isMalformed(/label of 10 bytes truncated/),
      );
    });

    it('compression loop (pointer to itself, and a two-pointer cycle)', () => {
      assert.throws(
        () => decodeDnsMessage(withQuestion(Buffer.from([0xc0, 12]))),
        isMalformed(/does not point backwards/),
      );
      // offset 12: label "a" then a pointer to 14; offset 14: pointer back to 12.
      assert.throws(
        () => decodeDnsMessage(withQuestion(Buffer.from([1, 0x61, 0xc0, 14, 0xc0, 12]))),
        isMalformed(/does not point backwards/),
      );
    });

    it('pointer truncated', () => {
      assert.throws(
        () =>
          decodeDnsMessage(
            Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0])]),
          ),
        isMalformed(/pointer truncated/),
      );
    });

    it('name longer than 255 bytes through pointers', () => {
      const labels = Buffer.concat(
        Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])),
      );
      assert.throws(
        () => decodeDnsMessage(withQuestion(Buffer.concat([labels, Buffer.from([0])]))),
        isMalformed(/longer than 255/),
      );
    });

    it('record data shorter than its length, and A data of the wrong size', () => {
      const q = Buffer.concat([encodeName('a'), Buffer.from([0, 1, 0, 1])]);
      const head = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
      const rr = Buffer.concat([Buffer.from([0xc0, 12]), Buffer.from([0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2])]);
      assert.throws(
        () => decodeDnsMessage(Buffer.concat([head, q, rr])),
        isMalformed(/record data of 4 bytes truncated/),
      );
      const bad = Buffer.concat([
        Buffer.from([0xc0, 12]),
        Buffer.from([0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3]),
      ]);
      assert.throws(
        () => decodeDnsMessage(Buffer.concat([head, q, bad])),
        isMalformed(/A record data must be 4 bytes, got 3/),
      );
      assert.throws(
        () => decodeDnsMessage(Buffer.concat([head, q, Buffer.from([0xc0, 12, 0, 1])])),
        isMalformed(/record header truncated/),
      );
    });

    it('never crashes on random bytes', () => {
      for (let i = 0; i < 2000; i++) {
        const buf = Buffer.alloc(12 + (i % 60));
        for (let j = 0; j < buf.length; j++) buf[j] = (Math.random() * 256) | 0;
        try {
          decodeDnsMessage(buf);
        } catch (e) {
          assert.ok(isOxyError(e) && e.code === 'OXY_ERR_DNS_MALFORMED', String(e));
        }
      }
    });
  });
});
