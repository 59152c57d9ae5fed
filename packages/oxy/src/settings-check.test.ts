/**
 * `oxySettingsWarnings`: a `tcp` or `udp` endpoint's fixed target that `egress.blocked_cidrs`
 * refuses is reported with its key and the range that holds it; what a lookup, an upstream
 * proxy or a narrower list decides is not. The CLI's side (printed by `--check`, logged at a
 * start) is in test/check.test.ts. `checkOxySettings` refuses an `egress.source_addr` this host
 * does not have, which would fail every connect with EADDRNOTAVAIL.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { describe, it } from 'node:test';
import { parseSettings } from 'foundations/settings';
import { normalizeSettings } from './proxy.ts';
import { type AppSettings, buildSettingsSchema } from './settings.ts';
import { checkOxySettings, oxySettingsWarnings } from './settings-check.ts';

function settingsOf(value: Record<string, unknown>): AppSettings {
  const settings = parseSettings(buildSettingsSchema({}, 'oxy'), [{ source: 'test.yaml', value }]);
  return normalizeSettings(settings as AppSettings);
}

function warningsFor(value: Record<string, unknown>) {
  return oxySettingsWarnings(settingsOf(value));
}

const tcp = (target: string | null) => ({ protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target } });
const udp = (target: string) => ({ protocol: 'udp', addr: '127.0.0.1:0', udp: { target } });

describe('oxySettingsWarnings', () => {
  it('names a tcp target inside the default list, and the range', () => {
    const w = warningsFor({ endpoints: { raw: tcp('127.0.0.1:5432') } });
    assert.equal(w.length, 1);
    assert.equal(w[0]?.path, 'endpoints.raw.tcp.target');
    assert.match(
      w[0]?.message ?? '',
      /^127\.0\.0\.1:5432 is inside egress\.blocked_cidrs \(127\.0\.0\.0\/8\): every connection to it will be refused/,
    );
  });

  it('names a udp target and an IPv6 one with the range of its own family', () => {
    const w = warningsFor({ endpoints: { dns: udp('10.1.1.1:53'), v6: tcp('[::1]:80') } });
    assert.deepEqual(
      w.map((x) => [x.path, /\(([^)]*)\)/.exec(x.message)?.[1]]),
      [
        ['endpoints.dns.udp.target', '10.0.0.0/8'],
        ['endpoints.v6.tcp.target', '::1/128'],
      ],
    );
    assert.match(w[0]?.message ?? '', /every session to it/);
  });

  it('takes localhost as loopback, both families', () => {
    const w = warningsFor({ endpoints: { raw: tcp('localhost:80') } });
    assert.match(w[0]?.message ?? '', /\(127\.0\.0\.0\/8, ::1\/128\)/);
  });

  it('names a udp endpoint that the upstream proxy would have to carry', () => {
    const w = warningsFor({
      endpoints: { dns: udp('192.0.2.53:53'), raw: tcp('127.0.0.1:80') },
      egress: { upstream_proxy: { enabled: true, addr: '127.0.0.1:3128' } },
    });
    assert.deepEqual(
      w.map((x) => x.path),
      ['endpoints.dns.protocol'],
    );
    assert.match(
      w[0]?.message ?? '',
      /an HTTP proxy cannot carry UDP: every session of this udp endpoint will be refused/,
    );
  });

  it('names a PROXY header to send that the upstream proxy would swallow', () => {
    const sending = { ...tcp('192.0.2.1:80'), tcp: { target: '192.0.2.1:80', send_proxy_protocol: 'v2' } };
    const chained = { upstream_proxy: { enabled: true, addr: '127.0.0.1:3128' } };
    const w = warningsFor({ endpoints: { raw: sending }, egress: chained });
    assert.deepEqual(
      w.map((x) => x.path),
      ['endpoints.raw.tcp.send_proxy_protocol'],
    );
    assert.match(
      w[0]?.message ?? '',
      /no PROXY header is sent unless an egress hook decides a direct connection/,
    );
    assert.deepEqual(warningsFor({ endpoints: { raw: sending } }), [], 'sent when direct');
  });

  it('says nothing when the list allows the target, or cannot know it yet', () => {
    assert.deepEqual(
      warningsFor({ endpoints: { raw: tcp('127.0.0.1:80') }, egress: { blocked_cidrs: [] } }),
      [],
    );
    assert.deepEqual(
      warningsFor({ endpoints: { raw: tcp('127.0.0.1:80') }, egress: { blocked_cidrs: ['10.0.0.0/8'] } }),
      [],
    );
    for (const v6 of ['[::1]:80', '[::]:80']) {
      assert.deepEqual(
        warningsFor({ endpoints: { raw: tcp(v6) }, egress: { blocked_cidrs: ['0.0.0.0/8'] } }),
        [],
        `${v6} is IPv6, not IPv4-compatible 0.0.0.x`,
      );
    }
    assert.deepEqual(warningsFor({ endpoints: { pub: tcp('192.0.2.1:80') } }), []); // not in the list
    assert.deepEqual(warningsFor({ endpoints: { named: tcp('db.internal:5432') } }), []); // resolved later
    // The PROXY header's destination.
    assert.deepEqual(
      warningsFor({ endpoints: { hdr: { ...tcp(null), proxy_protocol: { enabled: true } } } }),
      [],
    );
    assert.deepEqual(
      warningsFor({
        endpoints: { raw: tcp('127.0.0.1:80') },
        egress: { upstream_proxy: { enabled: true, addr: '127.0.0.1:3128' } },
      }),
      [],
      "a chained connection's target is the upstream proxy's to refuse",
    );
  });
});

describe('checkOxySettings: egress.source_addr', () => {
  const problemsFor = (source: string) =>
    checkOxySettings(settingsOf({ egress: { source_addr: source } })).filter(
      (p) => p.path === 'egress.source_addr',
    );
  const own = new Set(
    Object.values(os.networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  const foreign = ['203.0.113.9', '198.51.100.9', '10.9.9.9'].find((ip) => !own.has(ip)) as string;
  const nonlocal = ['ipv4', 'ipv6'].some((f) => {
    try {
      return fs.readFileSync(`/proc/sys/net/${f}/ip_nonlocal_bind`, 'utf8').trim() === '1';
    } catch {
      return false;
    }
  });

  it('refuses an address of no interface, naming it', { skip: nonlocal && 'ip_nonlocal_bind is on' }, () => {
    for (const source of [foreign, `::ffff:${foreign}`, '2001:db8::9']) {
      const problems = problemsFor(source);
      assert.equal(problems.length, 1, source);
      assert.equal(
        problems[0]?.message,
        `${source} is not an address of this host (ip addr shows this host's addresses); ~ lets the kernel choose`,
      );
    }
  });

  it("takes this host's addresses in any form, loopback's whole IPv4 range, and wildcards", () => {
    const ok = ['127.0.0.1', '127.0.0.2', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.2', '0.0.0.0', '::'];
    for (const source of ok) assert.deepEqual(problemsFor(source), [], source);
  });

  it('still refuses a name', () => {
    assert.match(
      problemsFor('my-host')[0]?.message ?? '',
      /^expected an IP address of this host, got "my-host"/,
    );
  });
});

describe('checkOxySettings: fixed targets that go round through other endpoints', () => {
  const cycleProblems = (endpoints: Record<string, unknown>) =>
    checkOxySettings(
      settingsOf({ endpoints: { main: null, ...endpoints }, egress: { blocked_cidrs: [] } }),
    ).filter((p) => p.message.includes('leads back'));
  const at = (protocol: 'tcp' | 'udp', addr: string, target: string | null) => ({
    protocol,
    addr,
    [protocol]: { target },
  });

  it('refuses two tcp endpoints that point at each other, once, naming the ring', () => {
    const problems = cycleProblems({
      a: at('tcp', '127.0.0.1:37150', '127.0.0.1:37151'),
      b: at('tcp', '127.0.0.1:37151', '127.0.0.1:37150'),
    });
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.path, 'endpoints.a.tcp.target');
    assert.match(problems[0]?.message ?? '', /endpoints\.a -> endpoints\.b -> endpoints\.a/);
  });

  it('refuses a longer ring of udp endpoints, spelled with a wildcard listener and localhost', () => {
    const problems = cycleProblems({
      a: at('udp', '0.0.0.0:37152', '127.0.0.1:37153'),
      b: at('udp', '127.0.0.1:37153', '[::1]:37154'),
      c: at('udp', '[::1]:37154', 'localhost:37152'),
    });
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.path, 'endpoints.a.udp.target');
  });

  it('takes a chain that ends, a ~ target, and a tcp target on a udp port', () => {
    assert.deepEqual(
      cycleProblems({
        a: at('tcp', '127.0.0.1:37150', '127.0.0.1:37151'),
        b: at('tcp', '127.0.0.1:37151', '127.0.0.1:37999'),
        c: at('tcp', '127.0.0.1:37160', '127.0.0.1:37161'),
        d: at('tcp', '127.0.0.1:37161', null),
        e: at('tcp', '127.0.0.1:37170', '127.0.0.1:37171'),
        f: at('udp', '127.0.0.1:37171', '127.0.0.1:37170'),
      }),
      [],
    );
  });
});
