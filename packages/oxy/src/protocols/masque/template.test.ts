import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { checkIpProto, checkIpTarget, checkTargetHost, checkTargetPort } from './targets.ts';
import { DEFAULT_TEMPLATES, expandUriTemplate, matchUriTemplate, parseUriTemplate } from './template.ts';

const templateError = (pattern: RegExp) => (e: unknown) =>
  isOxyError(e) && e.code === 'OXY_ERR_MASQUE_TEMPLATE' && pattern.test((e as Error).message);

describe('MASQUE URI templates (RFC 9298 §2, RFC 9484 §3)', () => {
  const udp = parseUriTemplate(DEFAULT_TEMPLATES['connect-udp'], 'connect-udp');
  const ip = parseUriTemplate(DEFAULT_TEMPLATES['connect-ip'], 'connect-ip');

  it('expands and matches the RFC 9298 examples, IPv6 colons percent-encoded', () => {
    assert.equal(
      expandUriTemplate(udp, { target_host: '192.0.2.6', target_port: '443' }),
      '/.well-known/masque/udp/192.0.2.6/443/',
    );
    const v6 = expandUriTemplate(udp, { target_host: '2001:db8::42', target_port: '443' });
    assert.equal(v6, '/.well-known/masque/udp/2001%3Adb8%3A%3A42/443/');
    assert.deepEqual(matchUriTemplate(udp, v6), { target_host: '2001:db8::42', target_port: '443' });
    assert.deepEqual(matchUriTemplate(udp, '/.well-known/masque/udp/example.com/53/'), {
      target_host: 'example.com',
      target_port: '53',
    });
  });

  it('handles query templates: literal pairs, form-style, and pairs in any order', () => {
    const literal = parseUriTemplate(
      'https://proxy.example.org:4443/masque?h={target_host}&p={target_port}',
      'connect-udp',
    );
    assert.equal(literal.origin, 'https://proxy.example.org:4443');
    const path = expandUriTemplate(literal, { target_host: '2001:db8::1', target_port: '80' });
    assert.equal(path, '/masque?h=2001%3Adb8%3A%3A1&p=80');
    assert.deepEqual(matchUriTemplate(literal, '/masque?p=80&x=1&h=2001%3Adb8%3A%3A1'), {
      target_host: '2001:db8::1',
      target_port: '80',
    });
    const form = parseUriTemplate(
      'https://proxy.example.org:4443/masque{?target_host,target_port}',
      'connect-udp',
    );
    const fpath = expandUriTemplate(form, { target_host: '192.0.2.6', target_port: '443' });
    assert.equal(fpath, '/masque?target_host=192.0.2.6&target_port=443');
    assert.deepEqual(matchUriTemplate(form, fpath), { target_host: '192.0.2.6', target_port: '443' });
    const ipForm = parseUriTemplate('/ip{?target,ipproto}', 'connect-ip');
    assert.equal(expandUriTemplate(ipForm, {}), '/ip');
    assert.deepEqual(matchUriTemplate(ipForm, '/ip'), {}, 'absent form-style variables are wildcards');
    assert.deepEqual(matchUriTemplate(ipForm, '/ip?ipproto=17'), { ipproto: '17' });
  });

  it('expands the CONNECT-IP wildcard bare and a prefix with %2F, as RFC 9484 shows', () => {
    assert.equal(expandUriTemplate(ip, { target: '*', ipproto: '*' }), '/.well-known/masque/ip/*/*/');
    const p = expandUriTemplate(ip, { target: '2001:db8::/32', ipproto: '17' });
    assert.equal(p, '/.well-known/masque/ip/2001%3Adb8%3A%3A%2F32/17/');
    assert.deepEqual(matchUriTemplate(ip, p), { target: '2001:db8::/32', ipproto: '17' });
    assert.deepEqual(matchUriTemplate(ip, '/.well-known/masque/ip/%2A/%2a/'), { target: '*', ipproto: '*' });
  });

  it('does not match targets that do not fit', () => {
    for (const bad of [
      '/.well-known/masque/udp/192.0.2.6/',
      '/.well-known/masque/udp/192.0.2.6/443',
      '/.well-known/masque/udp/a/b/443/',
      '/other/192.0.2.6/443/',
      '/.well-known/masque/udp/%zz/443/',
    ]) {
      assert.equal(matchUriTemplate(udp, bad), undefined, bad);
    }
    const literal = parseUriTemplate('/masque?h={target_host}&p={target_port}', 'connect-udp');
    assert.equal(matchUriTemplate(literal, '/masque?h=a.example'), undefined, 'missing p');
    assert.equal(matchUriTemplate(literal, '/masq?h=a&p=1'), undefined);
  });

  it('refuses templates the RFCs forbid', () => {
    const cases: [string, RegExp][] = [
      ['/udp/{target_host}/', /must contain \{target_port\}/],
      ['/udp/{+target_host}/{target_port}/', /"\+" operator/],
      ['/udp{/target_host,target_port}', /"\/" operator/],
      ['/udp/{#target_host}/{target_port}', /"#" operator/],
      ['/udp/{.target_host}/{target_port}', /"\." operator/],
      ['/udp/{;target_host}/{target_port}', /";" operator/],
      ['/udp/{target_host:3}/{target_port}', /level 3/],
      ['/udp/{target_host*}/{target_port}', /level 3/],
      ['/udp/{target_host/{target_port}', /bad variable name|unterminated/],
      ['/udp/{target_host}/{target_port}/{target_port}', /appears twice/],
      ['udp/{target_host}/{target_port}', /must start with "\/"/],
      ['https://{target_host}/{target_port}', /authority|start with/],
      ['/udp/ {target_host}/{target_port}', /printable ASCII/],
      ['/udp/é/{target_host}/{target_port}', /printable ASCII/],
      ['/udp/{target_host}/{target_port}#x', /fragment/],
    ];
    for (const [t, re] of cases)
      assert.throws(() => parseUriTemplate(t, 'connect-udp'), templateError(re), t);
    // CONNECT-IP variables are optional.
    assert.deepEqual(parseUriTemplate('/ip', 'connect-ip').variables, []);
  });
});

describe('MASQUE template variables (RFC 9298 §3, RFC 9484 §4.6)', () => {
  it('target_host: DNS names, IPv4 and IPv6 literals only', () => {
    assert.deepEqual(checkTargetHost('example.com'), {
      ok: true,
      value: { host: 'example.com', kind: 'dns' },
    });
    assert.deepEqual(checkTargetHost('Example.COM.'), {
      ok: true,
      value: { host: 'Example.COM', kind: 'dns' },
    });
    assert.deepEqual(checkTargetHost('192.0.2.6'), { ok: true, value: { host: '192.0.2.6', kind: 'ipv4' } });
    assert.deepEqual(checkTargetHost('2001:db8::42'), {
      ok: true,
      value: { host: '2001:db8::42', kind: 'ipv6' },
    });
    for (const bad of [
      '',
      '[2001:db8::1]',
      'fe80::1%eth0',
      '2001:db8:::1',
      '-bad.example',
      'a..b',
      'x'.repeat(64),
      '1.2.3',
      'a b',
      'a/b',
    ]) {
      assert.equal(checkTargetHost(bad).ok, false, bad);
    }
  });

  it('target_port: 1-65535 in decimal', () => {
    assert.deepEqual(checkTargetPort('443'), { ok: true, value: 443 });
    assert.deepEqual(checkTargetPort('65535'), { ok: true, value: 65535 });
    for (const bad of ['0', '65536', '', '-1', '0x50', '443 ', '100000'])
      assert.equal(checkTargetPort(bad).ok, false, bad);
  });

  it('ipproto: 0-255 or *', () => {
    assert.deepEqual(checkIpProto('*'), { ok: true, value: '*' });
    assert.deepEqual(checkIpProto(undefined), { ok: true, value: '*' });
    assert.deepEqual(checkIpProto('0'), { ok: true, value: 0 });
    assert.deepEqual(checkIpProto('255'), { ok: true, value: 255 });
    for (const bad of ['256', '', 'udp', '1.5', '-1']) assert.equal(checkIpProto(bad).ok, false, bad);
  });

  it('target: *, a DNS name, or an IP prefix with zero host bits', () => {
    assert.deepEqual(checkIpTarget('*'), { ok: true, value: { kind: 'any' } });
    assert.deepEqual(checkIpTarget('example.com'), { ok: true, value: { kind: 'dns', host: 'example.com' } });
    assert.deepEqual(checkIpTarget('192.0.2.0/24'), {
      ok: true,
      value: { kind: 'prefix', version: 4, address: '192.0.2.0', prefixLength: 24 },
    });
    assert.deepEqual(checkIpTarget('2001:db8::42'), {
      ok: true,
      value: { kind: 'prefix', version: 6, address: '2001:db8::42', prefixLength: 128 },
    });
    for (const bad of [
      '192.0.2.1/24',
      '192.0.2.0/33',
      '2001:db8::/129',
      '2001:db8::1/64',
      '',
      'a_b..c',
      '10.0.0.0/x',
    ]) {
      assert.equal(checkIpTarget(bad).ok, false, bad);
    }
  });
});
