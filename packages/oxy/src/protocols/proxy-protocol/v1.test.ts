import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeProxyHeader, decodeV1, encodeV1, ProxyProtocolError, type ProxyReason } from './index.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

function rejects(reason: ProxyReason) {
  return (e: unknown) => e instanceof ProxyProtocolError && e.reason === reason;
}

describe('PROXY v1: the specification’s lines', () => {
  it('decodes the example before an HTTP request, leaving the request', () => {
    const input = b(
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n',
    );
    const { header, rest } = decodeProxyHeader(input);
    assert.deepEqual(header, {
      version: 1,
      command: 'proxy',
      family: 'inet',
      transport: 'stream',
      addresses: {
        family: 'inet',
        source: { host: '192.168.0.1', port: 56324 },
        destination: { host: '192.168.0.11', port: 443 },
      },
      tlvs: [],
      length: 47,
    });
    assert.equal(Buffer.from(rest).toString(), 'GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n');
  });

  it('accepts the longest TCP4 line (56 bytes) and TCP6 line (104 bytes)', () => {
    const v4 = 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n';
    assert.equal(v4.length, 56);
    assert.equal(decodeV1(b(v4)).length, 56);
    const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const v6 = `PROXY TCP6 ${f} ${f} 65535 65535\r\n`;
    assert.equal(v6.length, 104);
    const h = decodeV1(b(v6));
    assert.equal(h.family, 'inet6');
    assert.deepEqual(h.addresses?.source, { host: f, port: 65535 });
  });

  it('accepts UNKNOWN, short and worst-case (107 bytes), ignoring the rest of the line', () => {
    for (const line of [
      'PROXY UNKNOWN\r\n',
      `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`,
    ]) {
      const h = decodeV1(b(line));
      assert.equal(h.length, line.length);
      assert.equal(h.addresses, null);
      assert.equal(h.family, 'unspec');
    }
    assert.equal(
      `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`.length,
      107,
    );
  });

  it('gives IPv6 addresses in Node’s form (compressed, lower case)', () => {
    const h = decodeV1(b('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:10.0.0.1 0 1\r\n'));
    assert.deepEqual(h.addresses, {
      family: 'inet6',
      source: { host: '2001:db8::1', port: 0 },
      destination: { host: '::ffff:10.0.0.1', port: 1 },
    });
  });

  it('encodes TCP4, TCP6 and UNKNOWN', () => {
    const a = (h: string, p: number) => ({ host: h, port: p });
    assert.equal(
      Buffer.from(
        encodeV1({
          addresses: { family: 'inet', source: a('192.168.0.1', 56324), destination: a('192.168.0.11', 443) },
        }),
      ).toString(),
      'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n',
    );
    assert.equal(
      Buffer.from(
        encodeV1({ addresses: { family: 'inet6', source: a('::1', 1), destination: a('2001:db8::2', 2) } }),
      ).toString(),
      'PROXY TCP6 ::1 2001:db8::2 1 2\r\n',
    );
    assert.equal(Buffer.from(encodeV1({ addresses: null })).toString(), 'PROXY UNKNOWN\r\n');
    assert.throws(
      () => encodeV1({ addresses: { family: 'unix', source: '/a', destination: '/b' } }),
      RangeError,
    );
    assert.throws(
      () =>
        encodeV1({
          transport: 'dgram',
          addresses: { family: 'inet', source: a('1.1.1.1', 1), destination: a('1.1.1.1', 1) },
        }),
      RangeError,
    );
    assert.throws(() => encodeV1({ addresses: null, tlvs: [{ type: 'alpn', value: 'h2' }] }), RangeError);
  });
});

describe('PROXY v1: malformed lines', () => {
  const cases: [string, string, ProxyReason][] = [
    ['lower-case proxy', 'proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n', 'bad_signature'],
    ['an HTTP request', 'GET / HTTP/1.1\r\n', 'bad_signature'],
    ['no space after PROXY', 'PROXY\tTCP4 1.2.3.4 1.2.3.4 1 2\r\n', 'bad_line'],
    ['two spaces', 'PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n', 'bad_line'],
    ['a trailing space', 'PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n', 'bad_line'],
    ['a missing port', 'PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n', 'bad_line'],
    ['a lone LF', 'PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n', 'bad_line'],
    ['a lone CR', 'PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX', 'bad_line'],
    ['UDP4', 'PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n', 'bad_family'],
    ['UNKNOWNX', 'PROXY UNKNOWNX\r\n', 'bad_family'],
    ['an empty protocol', 'PROXY \r\n', 'bad_family'],
    ['an octet over 255', 'PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n', 'bad_address'],
    ['a leading zero in an octet', 'PROXY TCP4 1.2.3.04 1.2.3.4 1 2\r\n', 'bad_address'],
    ['three octets', 'PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n', 'bad_address'],
    ['IPv6 under TCP4', 'PROXY TCP4 ::1 1.2.3.4 1 2\r\n', 'bad_address'],
    ['IPv4 under TCP6', 'PROXY TCP6 ::1 1.2.3.4 1 2\r\n', 'bad_address'],
    ['two double colons', 'PROXY TCP6 1::2::3 ::1 1 2\r\n', 'bad_address'],
    ['nine IPv6 groups', 'PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', 'bad_address'],
    ['a zone index', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'bad_address'],
    ['a five-digit IPv6 group', 'PROXY TCP6 12345:: ::1 1 2\r\n', 'bad_address'],
    ['a port over 65535', 'PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n', 'bad_port'],
    ['a leading zero in a port', 'PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n', 'bad_port'],
    ['a signed port', 'PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n', 'bad_port'],
    ['no CRLF in 107 bytes', `PROXY UNKNOWN ${'x'.repeat(100)}`, 'too_long'],
    ['a 108-byte line', `PROXY UNKNOWN ${'x'.repeat(92)}\r\n`, 'too_long'],
    // A CR in the 107th byte has no room for its LF: the same answer whole or split at 107 bytes.
    ['a CR in the last allowed byte', `PROXY UNKNOWN ${'x'.repeat(92)}\rz`, 'too_long'],
    ['a line cut short', 'PROXY TCP4 1.2.3.4', 'truncated'],
  ];
  for (const [name, line, reason] of cases) {
    it(`rejects ${name} as ${reason}`, () => {
      assert.throws(() => decodeV1(b(line)), rejects(reason));
    });
  }
});
