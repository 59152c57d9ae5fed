import assert from 'node:assert/strict';
import { BlockList, isIP, isIPv4 } from 'node:net';
import { describe, it } from 'node:test';
import { parseSettings, s } from 'foundations/settings';
import {
  CidrBlocklist,
  DEFAULT_BLOCKED_CIDRS,
  embeddedIPv4,
  parseDottedQuad,
  parseIPv6,
} from './blocklist.ts';

describe('CidrBlocklist', () => {
  const defaults = new CidrBlocklist(DEFAULT_BLOCKED_CIDRS);

  it('blocks every default range, at both edges', () => {
    const blocked = [
      '0.0.0.0',
      '0.255.255.255',
      '127.0.0.1',
      '127.255.255.255',
      '10.0.0.0',
      '10.255.255.255',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.0.1',
      '192.168.255.255',
      '100.64.0.0',
      '100.127.255.255',
      '169.254.169.254',
      '224.0.0.1',
      '239.255.255.255',
      '255.255.255.255',
      '::',
      '::1',
      'fe80::1',
      'febf:ffff::1',
      'fc00::1',
      'fd12:3456::1',
      'ff02::1',
    ];
    for (const ip of blocked) assert.equal(defaults.has(ip), true, ip);
  });

  it('lets public addresses through, including the neighbours of each range', () => {
    const allowed = [
      '1.1.1.1',
      '8.8.8.8',
      '11.0.0.0',
      '9.255.255.255',
      '172.15.255.255',
      '172.32.0.0',
      '192.167.255.255',
      '192.169.0.0',
      '100.63.255.255',
      '100.128.0.0',
      '169.253.255.255',
      '169.255.0.0',
      '223.255.255.255',
      '128.0.0.1',
      '2001:4860:4860::8888',
      '2606:4700::1111',
      'fec0::1',
      'fbff::1',
    ];
    for (const ip of allowed) assert.equal(defaults.has(ip), false, ip);
  });

  it('checks IPv4-mapped and NAT64 IPv6 addresses as the IPv4 they carry, in any textual form', () => {
    for (const ip of [
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '0:0:0:0:0:ffff:a00:1',
      '::FFFF:192.168.1.1',
      '64:ff9b::10.1.2.3',
      '64:ff9b:0:0:0:0:a01:203',
    ]) {
      assert.equal(defaults.has(ip), true, ip);
    }
    for (const ip of ['::ffff:8.8.8.8', '::ffff:808:808', '64:ff9b::1.1.1.1'])
      assert.equal(defaults.has(ip), false, ip);
  });

  it('checks every well-known IPv6 form that embeds an IPv4 address as that address', () => {
    const blocked = [
      '::127.0.0.1', // IPv4-compatible (deprecated)
      '::a00:1',
      '::2', // IPv4-compatible 0.0.0.2, inside 0.0.0.0/8
      '::ffff:0:127.0.0.1', // SIIT
      '::ffff:0:a9fe:a9fe', // SIIT 169.254.169.254 (cloud metadata)
      '64:ff9b:1:7f00:1:0:0:0', // local-use NAT64 /48: 127.0.0.1 around the u octet
      '64:ff9b:1:a9fe:a9:fe00::', // local-use NAT64 /48: 169.254.169.254
      '2002:7f00:1::', // 6to4 of 127.0.0.1
      '2002:c0a8:101::1', // 6to4 of 192.168.1.1
      '2001:0:4136:e378:8000:63bf:f5ff:fffe', // Teredo, client 10.0.0.1 (inverted)
      '2001:0:a00:1::1', // Teredo, server 10.0.0.1
    ];
    for (const ip of blocked) assert.equal(defaults.has(ip), true, ip);
    const allowed = [
      '::8.8.8.8',
      '::ffff:0:8.8.8.8',
      '64:ff9b:1:808:8:800::',
      '2002:808:808::1',
      '2001:0:4136:e378:8000:63bf:f7f7:f7f7',
    ];
    for (const ip of allowed) assert.equal(defaults.has(ip), false, ip);
  });

  it('takes :: and ::1 as IPv6 unspecified and loopback, not IPv4-compatible 0.0.0.0 and 0.0.0.1', () => {
    for (const ip of ['::', '::1', '::0.0.0.1', '0:0:0:0:0:0:0:1']) {
      assert.deepEqual(embeddedIPv4(parseIPv6(ip)), [], ip);
    }
    assert.deepEqual(embeddedIPv4(parseIPv6('::2')), [2]); // the rest of ::/96 is still IPv4-compatible
    assert.deepEqual(embeddedIPv4(parseIPv6('::ffff:0.0.0.1')), [1]); // and ::ffff:0:0/96 all mapped
    assert.deepEqual(embeddedIPv4(parseIPv6('::ffff:0:0.0.0.0')), [0]);
    assert.deepEqual(embeddedIPv4(parseIPv6('64:ff9b::1')), [1]);
    const thisNetwork = new CidrBlocklist(['0.0.0.0/8']);
    for (const ip of ['::1', '::']) assert.equal(thisNetwork.has(ip), false, ip);
    for (const ip of ['0.0.0.1', '::2', '::ffff:0.0.0.1', '64:ff9b::1'])
      assert.equal(thisNetwork.has(ip), true, ip);
  });

  it('blocks :: and ::1 by default through ::/128 and ::1/128', () => {
    const without = DEFAULT_BLOCKED_CIDRS.filter((c) => c !== '::/128' && c !== '::1/128');
    assert.equal(without.length, DEFAULT_BLOCKED_CIDRS.length - 2);
    for (const ip of ['::', '::1']) {
      assert.equal(defaults.has(ip), true, ip);
      assert.equal(new CidrBlocklist(without).has(ip), false, `${ip} without its own range`);
    }
  });

  it('parses IPv6 addresses to their 16 bytes, and finds what they embed', () => {
    assert.deepEqual([...parseIPv6('::')], new Array(16).fill(0));
    assert.deepEqual([...parseIPv6('1::ff:1.2.3.4')], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 1, 2, 3, 4]);
    assert.deepEqual([...parseIPv6('2002:c0a8:101::')].slice(0, 6), [0x20, 0x02, 0xc0, 0xa8, 1, 1]);
    assert.deepEqual(embeddedIPv4(parseIPv6('2001:db8::1')), []);
    assert.deepEqual(embeddedIPv4(parseIPv6('64:ff9b::c000:201')), [0xc0000201]);
  });

  it('ignores a zone index', () => {
    assert.equal(defaults.has('fe80::1%eth0'), true);
    assert.equal(defaults.has('2001:db8::1%1'), false);
  });

  it('fails closed on a string that is not an address', () => {
    for (const bad of ['', 'localhost', '1.2.3', '999.1.1.1', '[::1]', '127.0.0.1:80'])
      assert.equal(defaults.has(bad), true, bad);
  });

  it('takes bare addresses and custom lists; an empty list blocks nothing', () => {
    const b = new CidrBlocklist(['203.0.113.7', '2001:db8::/32']);
    assert.deepEqual(b.cidrs, ['203.0.113.7/32', '2001:db8::/32']);
    assert.equal(b.has('203.0.113.7'), true);
    assert.equal(b.has('203.0.113.8'), false);
    assert.equal(b.has('2001:db8:ffff::1'), true);
    assert.equal(new CidrBlocklist([]).has('127.0.0.1'), false);
  });

  it('rejects malformed entries, naming them', () => {
    for (const bad of [
      '10.0.0.0/33',
      '::/129',
      '10.0.0.0/',
      '10.0.0.0/x',
      'example.com/8',
      '10.0.0/8',
      'fe80::%eth0/10',
      '10.0.0.0/-1',
    ]) {
      assert.throws(
        () => new CidrBlocklist(['1.1.1.1/32', bad]),
        (e: Error) => e instanceof RangeError && e.message.includes(`#1 "${bad}"`),
        bad,
      );
    }
  });

  it('has defaults that the settings helper s.cidrList accepts and keeps as they are', () => {
    const schema = s.cidrList('Blocked ranges.', DEFAULT_BLOCKED_CIDRS);
    const parsed = parseSettings(schema, []);
    assert.deepEqual(parsed, [...DEFAULT_BLOCKED_CIDRS]);
    assert.deepEqual(new CidrBlocklist(parsed).cidrs, DEFAULT_BLOCKED_CIDRS);
  });

  it('parses random IPv6 addresses in every textual form back to their bytes (fuzz)', () => {
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const deadline = performance.now() + 300;
    let n = 0;
    while (performance.now() < deadline) {
      n++;
      // Bytes with runs of zeros, so '::' compression has something to compress.
      const bytes = Array.from({ length: 16 }, () => (rnd(3) === 0 ? 0 : rnd(256)));
      const groups = Array.from(
        { length: 8 },
        (_, i) => ((bytes[2 * i] as number) << 8) | (bytes[2 * i + 1] as number),
      );
      const text = groups.map((g) => g.toString(16));
      if (rnd(2) === 0) {
        const v4 = bytes.slice(12).join('.');
        text.splice(6, 2, v4);
      }
      let form = text.join(':');
      // Compress the first run of zero groups (before a dotted tail), as `::`.
      const start = text.indexOf('0');
      if (start >= 0 && rnd(2) === 0) {
        let end = start;
        while (end < text.length && text[end] === '0') end++;
        form = `${text.slice(0, start).join(':')}::${text.slice(end).join(':')}`;
      }
      if (rnd(4) === 0) form = form.toUpperCase();
      assert.equal(isIP(form), 6, form);
      assert.deepEqual([...parseIPv6(form)], bytes, form);
      // What it embeds is always a 32-bit address, never a throw.
      for (const v4 of embeddedIPv4(parseIPv6(form))) assert.ok(v4 >= 0 && v4 <= 0xffffffff, form);
    }
    assert.ok(n > 100);
  });

  it('parses dotted quads exactly as net.isIPv4 accepts them', () => {
    const cases = [
      '0.0.0.0',
      '255.255.255.255',
      '1.2.3.4',
      '01.2.3.4',
      '1.2.3.04',
      '1.2.3.256',
      '1.2.3',
      '1.2.3.4.',
      '.1.2.3.4',
      '1..2.3',
      '1.2.3.4.5',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1.2.3.-4',
      '1.2.3.a',
      '1234.1.1.1',
      '::1',
      '::ffff:1.2.3.4',
      '',
      '0.0.0.00',
      '10.0.0.1%eth0',
    ];
    for (const ip of cases) assert.equal(parseDottedQuad(ip) >= 0, isIPv4(ip), ip);
    assert.equal(parseDottedQuad('1.2.3.4'), 0x01020304);
    assert.equal(parseDottedQuad('255.255.255.255'), 0xffffffff);
  });

  it('answers IPv4 addresses exactly as net.BlockList does, for random addresses and ranges', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const quad = () => `${rnd(256)}.${rnd(256)}.${rnd(256)}.${rnd(256)}`;
    const cidrs = ['0.0.0.0/0', ...Array.from({ length: 30 }, () => `${quad()}/${rnd(33)}`)];
    for (let k = 1; k <= cidrs.length; k += 10) {
      const ours = new CidrBlocklist(cidrs.slice(1, k));
      const theirs = new BlockList();
      for (const c of cidrs.slice(1, k)) {
        const [a, p] = c.split('/') as [string, string];
        theirs.addSubnet(a, Number(p), 'ipv4');
      }
      for (let i = 0; i < 2000; i++) {
        const ip = i % 3 === 0 ? (cidrs[1 + rnd(k)]?.split('/')[0] ?? quad()) : quad();
        assert.equal(ours.has(ip), theirs.check(ip, 'ipv4'), `${ip} in ${k - 1} ranges`);
      }
    }
    assert.equal(new CidrBlocklist(['0.0.0.0/0']).has('203.0.113.9'), true);
  });
});
