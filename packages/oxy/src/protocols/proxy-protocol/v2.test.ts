import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { crc32c } from './crc32c.ts';
import {
  decodeProxyHeader,
  decodeV2,
  encodeV2,
  PP2_CLIENT,
  type ProxyHeader,
  ProxyProtocolError,
  type ProxyReason,
  proxyHeaderView,
} from './index.ts';

const SIG = '0d0a0d0a000d0a515549540a';
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');
const tlv = (type: number, valueHex: string) =>
  type.toString(16).padStart(2, '0') + (valueHex.length / 2).toString(16).padStart(4, '0') + valueHex;

function rejects(reason: ProxyReason) {
  return (e: unknown) =>
    e instanceof ProxyProtocolError && e.reason === reason && e.code === 'OXY_ERR_PROXY_PROTOCOL';
}

/** A header's bytes with its CRC32C TLV value (at `at`) filled in, as a sender computes it. */
function withCrc(bytes: Buffer, at: number): Buffer {
  bytes.writeUInt32BE(crc32c(bytes), at);
  return bytes;
}

describe('CRC32C', () => {
  it('matches the RFC 3720 B.4 vectors and the check value', () => {
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  });

  it('counts the four bytes at zeroAt as zeros', () => {
    const b = Buffer.from('123456789');
    const z = Buffer.from(b);
    z.fill(0, 2, 6);
    assert.equal(crc32c(b, 0, b.length, 2), crc32c(z));
  });
});

describe('PROXY v2: every command, family and transport', () => {
  const cases: { name: string; bytes: string; header: Omit<ProxyHeader, 'length'> }[] = [
    {
      name: 'PROXY TCP over IPv4 (0x11)',
      bytes: `${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'inet',
        transport: 'stream',
        addresses: {
          family: 'inet',
          source: { host: '192.168.0.1', port: 56324 },
          destination: { host: '192.168.0.11', port: 443 },
        },
        tlvs: [],
      },
    },
    {
      name: 'PROXY UDP over IPv4 (0x12)',
      bytes: `${SIG} 21 12 000c 0a000001 0a000002 0035 d431`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'inet',
        transport: 'dgram',
        addresses: {
          family: 'inet',
          source: { host: '10.0.0.1', port: 53 },
          destination: { host: '10.0.0.2', port: 54321 },
        },
        tlvs: [],
      },
    },
    {
      name: 'PROXY TCP over IPv6 (0x21)',
      bytes: `${SIG} 21 21 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 1f90 0050`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'inet6',
        transport: 'stream',
        addresses: {
          family: 'inet6',
          source: { host: '2001:db8::1', port: 8080 },
          destination: { host: '2001:db8::2', port: 80 },
        },
        tlvs: [],
      },
    },
    {
      name: 'PROXY UDP over IPv6 (0x22), an IPv4-mapped source',
      bytes: `${SIG} 21 22 0024 00000000000000000000ffff7f000001 00000000000000000000000000000001 0001 ffff`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'inet6',
        transport: 'dgram',
        addresses: {
          family: 'inet6',
          source: { host: '::ffff:127.0.0.1', port: 1 },
          destination: { host: '::1', port: 65535 },
        },
        tlvs: [],
      },
    },
    {
      name: 'PROXY UNIX stream (0x31)',
      bytes: `${SIG} 21 31 00d8 ${ascii('/run/a.sock').padEnd(216, '0')} ${ascii('/run/b.sock').padEnd(216, '0')}`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'unix',
        transport: 'stream',
        addresses: { family: 'unix', source: '/run/a.sock', destination: '/run/b.sock' },
        tlvs: [],
      },
    },
    {
      name: 'PROXY UNIX datagram (0x32), an abstract source',
      bytes: `${SIG} 21 32 00d8 ${`00${ascii('abs')}`.padEnd(216, '0')} ${ascii('/dev/log').padEnd(216, '0')}`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'unix',
        transport: 'dgram',
        addresses: { family: 'unix', source: '\0abs', destination: '/dev/log' },
        tlvs: [],
      },
    },
    {
      name: 'PROXY UNSPEC (0x00): no addresses, the socket’s apply',
      bytes: `${SIG} 21 00 0000`,
      header: {
        version: 2,
        command: 'proxy',
        family: 'unspec',
        transport: 'unspec',
        addresses: null,
        tlvs: [],
      },
    },
    {
      name: 'LOCAL UNSPEC (a health check)',
      bytes: `${SIG} 20 00 0000`,
      header: {
        version: 2,
        command: 'local',
        family: 'unspec',
        transport: 'unspec',
        addresses: null,
        tlvs: [],
      },
    },
  ];

  for (const c of cases) {
    it(`decodes and re-encodes ${c.name}`, () => {
      const bytes = hex(c.bytes);
      const header = decodeV2(bytes);
      assert.deepEqual(header, { ...c.header, length: bytes.length });
      const init = {
        command: c.header.command,
        transport: c.header.transport,
        addresses: c.header.addresses,
      };
      assert.deepEqual(Buffer.from(encodeV2(init)), bytes);
    });
  }

  it('accepts LOCAL with an address block and TLVs, ignoring the addresses', () => {
    const bytes = hex(`${SIG} 20 11 0014 7f000001 7f000002 0001 0002 ${tlv(1, ascii('h2'))} 040000`);
    const h = decodeV2(bytes);
    assert.equal(h.command, 'local');
    assert.equal(h.addresses, null);
    assert.deepEqual(h.tlvs, [
      { type: 'alpn', value: 'h2' },
      { type: 'noop', value: new Uint8Array(0) },
    ]);
  });

  it('accepts LOCAL whose length is shorter than its family’s address block', () => {
    const h = decodeV2(hex(`${SIG} 20 21 0004 00000000`));
    assert.equal(h.command, 'local');
    assert.equal(h.length, 20);
  });

  it('accepts LOCAL whatever its block holds (malformed TLVs, a wrong CRC32C, noise), dropping its TLVs, as haproxy does', () => {
    for (const body of [
      `11 0012 7f000001 7f000002 0001 0002 040010 616263`, // a TLV longer than the block
      `00 0006 040010 616263`, // the same with UNSPEC
      `11 0013 7f000001 7f000002 0001 0002 ${tlv(3, '01020304')}`, // a CRC32C that does not match
      `00 0010 ${'ab'.repeat(16)}`, // noise
    ]) {
      const h = decodeV2(hex(`${SIG} 20 ${body}`));
      assert.equal(h.command, 'local', body);
      assert.deepEqual(h.tlvs, [], body);
    }
    // The same blocks after PROXY are refused.
    assert.throws(
      () => decodeV2(hex(`${SIG} 21 11 0012 7f000001 7f000002 0001 0002 040010 616263`)),
      rejects('bad_tlv'),
    );
  });

  it('leaves the bytes after the header alone', () => {
    const bytes = hex(`${SIG} 21 11 000c 01020304 05060708 0001 0002 ${ascii('GET / HTTP/1.1\r\n')}`);
    const { header, rest } = decodeProxyHeader(bytes);
    assert.equal(header.length, 28);
    assert.equal(Buffer.from(rest).toString(), 'GET / HTTP/1.1\r\n');
  });
});

describe('PROXY v2: TLVs', () => {
  const ssl =
    '07' + // client: SSL | CERT_CONN | CERT_SESS
    '00000000' + // verify: 0 (verified)
    tlv(0x21, ascii('TLSv1.3')) +
    tlv(0x22, ascii('client.example')) +
    tlv(0x23, ascii('TLS_AES_256_GCM_SHA384')) +
    tlv(0x24, ascii('RSA-SHA256')) +
    tlv(0x25, ascii('RSA2048')) +
    tlv(0x26, ascii('X25519')) +
    tlv(0x27, ascii('rsa_pss_rsae_sha256')) +
    tlv(0x28, '3003020101') +
    tlv(0x2f, 'ab');
  const tlvs =
    tlv(0x03, '00000000') +
    tlv(0x01, ascii('h2')) +
    tlv(0x02, Buffer.from('bücher.example').toString('hex')) +
    tlv(0x04, '000000') +
    tlv(0x05, ascii('abc-123')) +
    tlv(0x20, ssl) +
    tlv(0x30, ascii('blue')) +
    tlv(0xe0, '0102');

  function build(tlvHex: string): Buffer {
    const len = 12 + tlvHex.length / 2;
    return hex(`${SIG} 21 11 ${len.toString(16).padStart(4, '0')} 7f000001 7f000002 3039 0050 ${tlvHex}`);
  }

  it('types every registered TLV and SSL sub-TLV, keeps unknown ones as bytes, and checks the CRC', () => {
    const bytes = withCrc(build(tlvs), 28 + 3);
    const h = decodeV2(bytes);
    assert.deepEqual(h.tlvs, [
      { type: 'crc32c', value: bytes.readUInt32BE(31) },
      { type: 'alpn', value: 'h2' },
      { type: 'authority', value: 'bücher.example' },
      { type: 'noop', value: new Uint8Array(3) },
      { type: 'unique_id', value: new Uint8Array(Buffer.from('abc-123')) },
      {
        type: 'ssl',
        client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS,
        verify: 0,
        version: 'TLSv1.3',
        cn: 'client.example',
        cipher: 'TLS_AES_256_GCM_SHA384',
        sigAlg: 'RSA-SHA256',
        keyAlg: 'RSA2048',
        group: 'X25519',
        sigScheme: 'rsa_pss_rsae_sha256',
        clientCert: new Uint8Array(hex('3003020101')),
        unknown: [{ code: 0x2f, value: new Uint8Array([0xab]) }],
      },
      { type: 'netns', value: 'blue' },
      { type: 'unknown', code: 0xe0, value: new Uint8Array([1, 2]) },
    ]);
    // The encoder writes the same bytes back (CRC first, sub-TLVs in type order).
    const again = encodeV2({ addresses: h.addresses, tlvs: h.tlvs });
    assert.deepEqual(Buffer.from(again), bytes);
    assert.deepEqual(proxyHeaderView(h), {
      version: 2,
      command: 'proxy',
      family: 'inet',
      transport: 'stream',
      source: '127.0.0.1:12345',
      destination: '127.0.0.2:80',
      tlvs: {
        crc32c: `0x${bytes.readUInt32BE(31).toString(16).padStart(8, '0')}`,
        alpn: 'h2',
        authority: 'bücher.example',
        noop: 1,
        unique_id: 'abc-123',
        ssl: {
          client_ssl: true,
          client_cert_conn: true,
          client_cert_sess: true,
          verified: true,
          verify: 0,
          version: 'TLSv1.3',
          cn: 'client.example',
          cipher: 'TLS_AES_256_GCM_SHA384',
          sig_alg: 'RSA-SHA256',
          key_alg: 'RSA2048',
          group: 'X25519',
          sig_scheme: 'rsa_pss_rsae_sha256',
          client_cert: '3003020101',
        },
        netns: 'blue',
        unknown: [{ type: 0xe0, value: '0102' }],
      },
    });
  });

  it('rejects a header whose CRC32C does not match, wherever the damage is', () => {
    const good = withCrc(build(tlvs), 31);
    for (const at of [0x0e + 2, 20, 31, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x01;
      assert.throws(() => decodeV2(bad), rejects('bad_crc'), `byte ${at}`);
    }
  });

  it('writes a CRC32C the decoder verifies, when asked', () => {
    const bytes = encodeV2(
      {
        addresses: {
          family: 'inet',
          source: { host: '1.2.3.4', port: 1 },
          destination: { host: '5.6.7.8', port: 2 },
        },
      },
      { crc32c: true },
    );
    const h = decodeV2(bytes);
    assert.equal(h.tlvs[0]?.type, 'crc32c');
    const bad = Buffer.from(bytes);
    bad[17]! ^= 0xff;
    assert.throws(() => decodeV2(bad), rejects('bad_crc'));
  });

  const malformed: [string, string][] = [
    ['a TLV overrunning the header', '01000568'],
    ['two stray bytes after a TLV', `${tlv(1, '68')}0000`],
    ['a CRC32C of 3 bytes', tlv(3, '000000')],
    ['two CRC32C TLVs', tlv(3, '00000000') + tlv(3, '00000000')],
    ['a UNIQUE_ID of 129 bytes', tlv(5, '61'.repeat(129))],
    ['an SSL TLV of 4 bytes', tlv(0x20, '01000000')],
    ['an SSL sub-TLV overrunning its TLV', tlv(0x20, `0100000000${'210009'}${ascii('TLS')}`)],
    ['two SSL_VERSION sub-TLVs', tlv(0x20, `0100000000${tlv(0x21, '41')}${tlv(0x21, '41')}`)],
    ['a non-ASCII SSL_VERSION', tlv(0x20, `0100000000${tlv(0x21, 'c3a9')}`)],
    ['an AUTHORITY that is not UTF-8', tlv(2, 'ff')],
    ['a NETNS that is not ASCII', tlv(0x30, '80')],
  ];
  for (const [name, t] of malformed) {
    it(`rejects ${name} as bad_tlv`, () => {
      assert.throws(() => decodeV2(build(t)), rejects('bad_tlv'));
    });
  }
});

describe('PROXY v2: malformed fixed part and addresses', () => {
  const cases: [string, string, ProxyReason][] = [
    ['a wrong signature byte', `0d0a0d0a000d0a515549540b 21 11 000c ${'00'.repeat(12)}`, 'bad_signature'],
    ['version 1 in the version nibble', `${SIG} 11 11 000c ${'00'.repeat(12)}`, 'bad_version'],
    ['version 3', `${SIG} 31 11 000c ${'00'.repeat(12)}`, 'bad_version'],
    ['command 2', `${SIG} 22 11 000c ${'00'.repeat(12)}`, 'bad_command'],
    ['family 4', `${SIG} 21 41 000c ${'00'.repeat(12)}`, 'bad_family'],
    ['transport 3', `${SIG} 21 13 000c ${'00'.repeat(12)}`, 'bad_family'],
    ['INET with transport UNSPEC', `${SIG} 21 10 000c ${'00'.repeat(12)}`, 'bad_family'],
    ['PROXY TCP4 with length 11', `${SIG} 21 11 000b ${'00'.repeat(11)}`, 'bad_length'],
    ['PROXY TCP6 with length 12', `${SIG} 21 21 000c ${'00'.repeat(12)}`, 'bad_length'],
    ['PROXY UNIX with length 215', `${SIG} 21 31 00d7 ${'00'.repeat(215)}`, 'bad_length'],
    ['a length beyond the data', `${SIG} 21 11 000c ${'00'.repeat(11)}`, 'truncated'],
    ['fewer than 16 bytes', `${SIG} 21 11`, 'truncated'],
    ['a signature prefix alone', '0d0a0d', 'truncated'],
    ['fewer than 16 bytes without the signature', '68656c6c6f', 'bad_signature'],
    ['a short input that leaves the signature late', '0d0a0d0a000d0a5155490000', 'bad_signature'],
    ['nothing at all', '', 'bad_signature'],
    ['a length over the limit', `${SIG} 21 11 1001`, 'too_long'],
  ];
  for (const [name, bytes, reason] of cases) {
    it(`rejects ${name} as ${reason}`, () => {
      assert.throws(() => decodeV2(hex(bytes)), rejects(reason));
    });
  }

  it('applies a configured limit, and never more than 16 + 65535', () => {
    const big = hex(`${SIG} 21 00 0100 ${tlv(4, '00'.repeat(253))}`);
    assert.throws(() => decodeV2(big, { maxLength: 271 }), rejects('too_long'));
    assert.equal(decodeV2(big, { maxLength: 272 }).length, 272);
    const max = Buffer.concat([hex(`${SIG} 21 00 ffff`), hex(tlv(4, '00'.repeat(0xffff - 3)))]);
    assert.equal(decodeV2(max, { maxLength: 1e9 }).length, 16 + 0xffff);
  });

  it('refuses to encode what the wire cannot carry', () => {
    const inet = (host: string, port = 1) => ({ host, port });
    assert.throws(
      () => encodeV2({ addresses: { family: 'inet', source: inet('::1'), destination: inet('1.2.3.4') } }),
      RangeError,
    );
    assert.throws(
      () =>
        encodeV2({
          addresses: { family: 'inet', source: inet('1.2.3.4', 70000), destination: inet('1.2.3.4') },
        }),
      RangeError,
    );
    assert.throws(
      () => encodeV2({ addresses: null, tlvs: [{ type: 'unique_id', value: new Uint8Array(129) }] }),
      RangeError,
    );
    assert.throws(() => encodeV2({ addresses: null, tlvs: [{ type: 'alpn', value: 'é✓' }] }), RangeError);
    assert.throws(
      () => encodeV2({ addresses: { family: 'unix', source: 'x'.repeat(109), destination: '/b' } }),
      RangeError,
    );
  });
});
