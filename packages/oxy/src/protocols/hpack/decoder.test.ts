/**
 * The HPACK decoder against RFC 7541 Appendix C (requests with and without Huffman coding,
 * responses with evictions from a 256-byte table) and against blocks no encoder may send.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { HpackDecoder, huffmanDecode } from './decoder.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const pairs = (d: HpackDecoder, block: string): [string, string][] =>
  d.decode(hex(block)).map((f) => [f.name, f.value]);
const table = (d: HpackDecoder): [string, string][] => d.dynamicTable.map((f) => [f.name, f.value]);

const REQ1: [string, string][] = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':path', '/'],
  [':authority', 'www.example.com'],
];
const REQ2: [string, string][] = [...REQ1, ['cache-control', 'no-cache']];
const REQ3: [string, string][] = [
  [':method', 'GET'],
  [':scheme', 'https'],
  [':path', '/index.html'],
  [':authority', 'www.example.com'],
  ['custom-key', 'custom-value'],
];

function requests(blocks: [string, string, string]): void {
  const d = new HpackDecoder();
  assert.deepEqual(pairs(d, blocks[0]), REQ1);
  assert.equal(d.tableSize, 57);
  assert.deepEqual(pairs(d, blocks[1]), REQ2);
  assert.equal(d.tableSize, 110);
  assert.deepEqual(pairs(d, blocks[2]), REQ3);
  assert.deepEqual(table(d), [
    ['custom-key', 'custom-value'],
    ['cache-control', 'no-cache'],
    [':authority', 'www.example.com'],
  ]);
  assert.equal(d.tableSize, 164);
}

describe('RFC 7541 Appendix C', () => {
  it('C.3: requests without Huffman coding', () => {
    requests([
      '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
      '8286 84be 5808 6e6f 2d63 6163 6865',
      '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
    ]);
  });

  it('C.4: requests with Huffman coding', () => {
    requests([
      '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
      '8286 84be 5886 a8eb 1064 9cbf',
      '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
    ]);
  });

  it('C.6: responses with Huffman coding and evictions (256-byte table)', () => {
    const d = new HpackDecoder(256);
    const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
    assert.deepEqual(
      pairs(
        d,
        `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
      ),
      [
        [':status', '302'],
        ['cache-control', 'private'],
        ['date', date1],
        ['location', 'https://www.example.com'],
      ],
    );
    assert.equal(d.tableSize, 222);
    assert.deepEqual(pairs(d, '4883 640e ffc1 c0bf'), [
      [':status', '307'],
      ['cache-control', 'private'],
      ['date', date1],
      ['location', 'https://www.example.com'],
    ]);
    assert.equal(d.tableSize, 222);
    const cookie = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
    assert.deepEqual(
      pairs(
        d,
        `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
      ),
      [
        [':status', '200'],
        ['cache-control', 'private'],
        ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
        ['location', 'https://www.example.com'],
        ['content-encoding', 'gzip'],
        ['set-cookie', cookie],
      ],
    );
    assert.deepEqual(table(d), [
      ['set-cookie', cookie],
      ['content-encoding', 'gzip'],
      ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
    ]);
    assert.equal(d.tableSize, 215);
  });

  it('a block split anywhere decodes the same through decodeSome', () => {
    const block = hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65');
    for (let cut = 0; cut <= block.length; cut++) {
      const d = new HpackDecoder();
      d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'));
      d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'));
      const got: string[] = [];
      const used = d.decodeSome(block.subarray(0, cut), (f) => got.push(f.name));
      const rest = Buffer.concat([block.subarray(used, cut), block.subarray(cut)]);
      assert.equal(
        d.decodeSome(rest, (f) => got.push(f.name)),
        rest.length,
      );
      assert.deepEqual(
        got,
        REQ3.map(([n]) => n),
      );
    }
  });
});

describe('malformed blocks', () => {
  const bad = (block: string, limit = 4096): void => {
    const d = new HpackDecoder(limit);
    assert.throws(
      () => d.decode(hex(block)),
      (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_HPACK_MALFORMED',
      block,
    );
  };
  it('index 0 and indexes beyond both tables', () => {
    bad('80');
    bad('be');
    bad('7f 00');
  });
  it('a table size update after a field, or above the advertised limit', () => {
    bad('82 3f e1 1f');
    bad('3f e1 2f', 4096);
  });
  it('Huffman strings with EOS, padding longer than 7 bits, or padding not all ones', () => {
    bad('00 84 ff ff ff ff 01 61'); // EOS (30 ones) inside the name
    bad('00 82 1f ff 01 61'); // 'a' then 11 bits of padding
    bad('00 81 00 01 61'); // '0' (00000) then 000 padding
  });
  it('truncated blocks and integers that overflow', () => {
    bad('00 05 61');
    bad('ff');
    bad('ff ff ff ff ff ff ff 01');
  });
  it('Huffman decoding of the RFC strings', () => {
    assert.equal(huffmanDecode(hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff')).toString(), 'www.example.com');
    assert.equal(huffmanDecode(hex('a8eb 1064 9cbf')).toString(), 'no-cache');
  });
  it('a table size update at the start of a block evicts, and a new limit holds', () => {
    const d = new HpackDecoder();
    d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'));
    assert.equal(d.tableSize, 57);
    d.decode(hex('20 82'));
    assert.equal(d.tableSize, 0);
    assert.equal(d.decode(hex('3f 11 82')).length, 1); // back to 48
  });
});
