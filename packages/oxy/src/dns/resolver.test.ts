import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { after, before, beforeEach, describe, it } from 'node:test';
import { defaultSettings, parseSettings } from 'foundations/settings';
import { isOxyError } from '../errors.ts';
import { startDnsServer, type TestDnsServer } from '../testing/dns-server.ts';
import { DnsResolver, interleave } from './resolver.ts';
import { DnsSettings } from './settings.ts';

function settings(value: Record<string, unknown>): DnsSettings {
  return parseSettings(DnsSettings, [{ source: 'test', value }]);
}

function code(expected: string, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(isOxyError(e), String(e));
    assert.equal(e.code, expected, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  };
}

describe('DnsSettings', () => {
  it('defaults to the system resolver with a cache', () => {
    assert.deepEqual(defaultSettings(DnsSettings), {
      nameservers: [],
      fallback_nameservers: [],
      timeout: 2000,
      attempts: 2,
      cache: {
        enabled: true,
        max_entries: 10000,
        min_ttl: 5000,
        max_ttl: 3_600_000,
        negative_ttl: 30_000,
        system_ttl: 30_000,
      },
    });
  });

  it('names the key of a bad nameserver', () => {
    assert.throws(
      () => new DnsResolver(settings({ nameservers: ['127.0.0.1:53', 'dns.example:53'] })),
      /^SettingsError: egress\.dns\.nameservers\[1\]: expected an IP address with an optional port .*got "dns\.example:53"$/,
    );
    assert.throws(
      () => new DnsResolver(settings({ fallback_nameservers: ['1.2.3.4:99999'] })),
      /fallback_nameservers\[0\]/,
    );
  });
});

describe('DnsResolver against a loopback DNS server', () => {
  let primary: TestDnsServer;
  let fallback: TestDnsServer;
  let clock = 0;
  const counts = { hit: 0, miss: 0, fallback: 0 };
  const events = {
    onHit: () => counts.hit++,
    onMiss: () => counts.miss++,
    onFallback: () => counts.fallback++,
  };
  // `realClock` uses performance.now; otherwise the test moves `clock` by hand.
  const make = (extra: Record<string, unknown> = {}, realClock = false) =>
    new DnsResolver(settings({ nameservers: [primary.address], timeout: '1s', attempts: 1, ...extra }), {
      events,
      ...(realClock ? {} : { now: () => clock }),
    });

  before(async () => {
    const records = {
      'dual.test': { A: ['192.0.2.1', '192.0.2.2'], AAAA: ['2001:db8::1', '2001:db8::2'], ttl: 42 },
      'v4only.test': { A: ['192.0.2.9'], ttl: 300 },
      'short.test': { A: ['192.0.2.10'], ttl: 1 },
      'long.test': { A: ['192.0.2.11'], ttl: 86_400 },
      'zero.test': { A: ['192.0.2.12'], ttl: 0 },
    };
    primary = await startDnsServer({ records });
    fallback = await startDnsServer({ records: { 'dual.test': { A: ['198.51.100.1'], ttl: 60 } } });
  });
  after(async () => {
    await primary.close();
    await fallback.close();
  });
  beforeEach(() => {
    primary.failMode = 'none';
    primary.delayMs = 0;
    primary.resetCounts();
    fallback.resetCounts();
    Object.assign(counts, { hit: 0, miss: 0, fallback: 0 });
    clock = 1_000_000;
  });

  it('asks A and AAAA, interleaves IPv6 first, and answers the second lookup from the cache', async () => {
    const r = make();
    const first = await r.resolve('Dual.Test.');
    assert.deepEqual(first, {
      addresses: ['2001:db8::1', '192.0.2.1', '2001:db8::2', '192.0.2.2'],
      ttlMs: 42_000,
      fromCache: false,
    });
    assert.deepEqual(primary.log.map((q) => q.type).sort(), ['A', 'AAAA']);
    clock += 2000;
    const second = await r.resolve('dual.test');
    assert.deepEqual(second, { addresses: first.addresses, ttlMs: 40_000, fromCache: true });
    assert.equal(primary.queries(), 2);
    assert.deepEqual(counts, { hit: 1, miss: 1, fallback: 0 });
  });

  it('asks only the family requested', async () => {
    const r = make();
    assert.deepEqual((await r.resolve('dual.test', { family: 4 })).addresses, ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual((await r.resolve('dual.test', { family: 6 })).addresses, ['2001:db8::1', '2001:db8::2']);
    assert.deepEqual(
      primary.log.map((q) => q.type),
      ['A', 'AAAA'],
    );
  });

  it('takes a name with addresses of one family only (NODATA for the other)', async () => {
    assert.deepEqual((await make().resolve('v4only.test')).addresses, ['192.0.2.9']);
  });

  it('expires entries at their TTL, clamped to [min_ttl, max_ttl]', async () => {
    const r = make({ cache: { min_ttl: '5s', max_ttl: '1h' } });
    assert.equal((await r.resolve('short.test')).ttlMs, 5000); // TTL 1 s, raised to min_ttl
    assert.equal((await r.resolve('long.test')).ttlMs, 3_600_000); // TTL 1 day, cut to max_ttl
    clock += 4999;
    assert.equal((await r.resolve('short.test')).fromCache, true);
    clock += 2;
    assert.equal((await r.resolve('short.test')).fromCache, false);
    assert.equal(primary.queries('short.test'), 4); // A and AAAA, twice
    assert.equal((await r.resolve('long.test')).fromCache, true);
  });

  it('expires on the real clock too, and does not cache a TTL of 0 when min_ttl is 0', async () => {
    const r = make({ cache: { min_ttl: '150ms' } }, true);
    assert.equal((await r.resolve('zero.test')).ttlMs, 150);
    assert.equal((await r.resolve('zero.test')).fromCache, true);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal((await r.resolve('zero.test')).fromCache, false);
    const none = make({ cache: { min_ttl: '0s' } });
    await none.resolve('zero.test');
    assert.equal((await none.resolve('zero.test')).fromCache, false);
    assert.equal(primary.queries('zero.test'), 8); // A and AAAA, four times
  });

  it('caches NXDOMAIN and NODATA for negative_ttl', async () => {
    const r = make({ cache: { negative_ttl: '10s' } });
    await assert.rejects(
      r.resolve('missing.test'),
      code('OXY_ERR_DNS_NXDOMAIN', /^no address for missing\.test \(no such name\)$/),
    );
    await assert.rejects(r.resolve('missing.test'), code('OXY_ERR_DNS_NXDOMAIN', /no such name/));
    assert.equal(primary.queries('missing.test'), 2); // A and AAAA once
    await assert.rejects(
      r.resolve('v4only.test', { family: 6 }),
      code('OXY_ERR_DNS_NXDOMAIN', /\(no address\)$/),
    );
    await assert.rejects(r.resolve('v4only.test', { family: 6 }), code('OXY_ERR_DNS_NXDOMAIN'));
    assert.equal(primary.queries('v4only.test'), 1);
    assert.deepEqual(counts, { hit: 2, miss: 2, fallback: 0 });
    clock += 10_001;
    primary.setRecord('missing.test', { A: ['192.0.2.99'] });
    assert.deepEqual((await r.resolve('missing.test')).addresses, ['192.0.2.99']);
    primary.records.delete('missing.test');
  });

  it('asks the fallback nameservers when the primary times out', async () => {
    primary.failMode = 'silent';
    const r = make({ fallback_nameservers: [fallback.address] });
    const t0 = performance.now();
    const got = await r.resolve('dual.test');
    const ms = performance.now() - t0;
    assert.deepEqual(got.addresses, ['198.51.100.1']);
    assert.ok(ms >= 190 && ms < 2000, `${ms} ms`);
    assert.equal(primary.queries('dual.test'), 2);
    assert.equal(counts.fallback, 1);
  });

  it('asks the fallback nameservers when the primary answers SERVFAIL, without waiting', async () => {
    primary.failMode = 'servfail';
    const t0 = performance.now();
    assert.deepEqual(
      (await make({ fallback_nameservers: [fallback.address] }).resolve('dual.test')).addresses,
      ['198.51.100.1'],
    );
    // Waiting for the primary would take its 1 s timeout; a loaded machine may take a few
    // hundred ms for the two loopback exchanges, so the bound sits between the two.
    const ms = performance.now() - t0;
    assert.ok(ms < 500, `${ms} ms`);
  });

  it('does not ask the fallback when the primary says the name does not exist', async () => {
    const r = make({ fallback_nameservers: [fallback.address] });
    await assert.rejects(r.resolve('missing.test'), code('OXY_ERR_DNS_NXDOMAIN'));
    assert.equal(fallback.queries(), 0);
  });

  it('reports timeouts and failures of every nameserver, and does not cache them', async () => {
    primary.failMode = 'silent';
    const r = make();
    await assert.rejects(
      r.resolve('dual.test'),
      code('OXY_ERR_DNS_TIMEOUT', /^DNS lookup of dual\.test timed out/),
    );
    primary.failMode = 'refused';
    await assert.rejects(
      make({ fallback_nameservers: [primary.address] }).resolve('dual.test'),
      code('OXY_ERR_DNS_FAILED', /failed \(primary: REFUSED; fallback: REFUSED\)$/),
    );
    primary.failMode = 'none';
    assert.equal((await r.resolve('dual.test')).fromCache, false);
  });

  it('joins concurrent lookups of the same name into one', async () => {
    primary.delayMs = 50;
    const r = make();
    const all = await Promise.all(Array.from({ length: 10 }, () => r.resolve('dual.test')));
    assert.equal(new Set(all.map((a) => a.addresses.join())).size, 1);
    assert.equal(primary.queries('dual.test'), 2);
    assert.deepEqual(counts, { hit: 0, miss: 1, fallback: 0 });
  });

  it('stops waiting on abort while the shared lookup completes and is cached', async () => {
    primary.delayMs = 100;
    const r = make();
    const ac = new AbortController();
    const waiting = r.resolve('dual.test', { signal: ac.signal });
    const other = r.resolve('dual.test');
    ac.abort();
    await assert.rejects(waiting, code('OXY_ERR_ABORTED'));
    assert.equal((await other).addresses.length, 4);
    assert.equal((await r.resolve('dual.test')).fromCache, true);
    await assert.rejects(r.resolve('dual.test', { signal: AbortSignal.abort() }), code('OXY_ERR_ABORTED'));
  });

  it('does not cache when the cache is disabled', async () => {
    const r = make({ cache: { enabled: false } });
    await r.resolve('dual.test');
    assert.equal((await r.resolve('dual.test')).fromCache, false);
    assert.equal(r.cacheSize, 0);
  });

  it('returns IP literals and localhost without asking anyone', async () => {
    const r = make();
    assert.deepEqual(await r.resolve('192.0.2.7'), {
      addresses: ['192.0.2.7'],
      ttlMs: Number.POSITIVE_INFINITY,
      fromCache: false,
    });
    assert.deepEqual((await r.resolve('[2001:db8::7]')).addresses, ['2001:db8::7']);
    assert.deepEqual((await r.resolve('LocalHost')).addresses, ['::1', '127.0.0.1']);
    assert.deepEqual((await r.resolve('api.localhost.', { family: 4 })).addresses, ['127.0.0.1']);
    assert.equal(primary.queries(), 0);
  });

  it('rejects names that cannot be DNS names without asking', async () => {
    const r = make();
    for (const bad of ['', 'a..b', `${'a'.repeat(64)}.test`, 'a b.test', 'user@host.test']) {
      await assert.rejects(r.resolve(bad), code('OXY_ERR_DNS_NXDOMAIN', /is not a valid host name/));
    }
    assert.equal(primary.queries(), 0);
  });
});

describe('DnsResolver with the system resolver', () => {
  // Only a name that /etc/hosts holds is looked up, so no query leaves the machine.
  const hosts = readFileSync('/etc/hosts', 'utf8');
  const name = os.hostname();
  const listed = hosts.split('\n').some((line) => line.split(/\s+/).slice(1).includes(name));

  it('answers from /etc/hosts and caches for system_ttl', {
    skip: listed ? false : `${name} is not in /etc/hosts`,
  }, async () => {
    const r = new DnsResolver(settings({ cache: { system_ttl: '7s' } }));
    const got = await r.resolve(name);
    assert.ok(got.addresses.length > 0);
    assert.equal(got.ttlMs, 7000);
    assert.equal((await r.resolve(name)).fromCache, true);
  });
});

describe('interleave', () => {
  it('alternates families IPv6 first, keeping order within each, dropping duplicates', () => {
    assert.deepEqual(interleave(['1.1.1.1', '2.2.2.2', '3.3.3.3', '::1', '1.1.1.1', '::2']), [
      '::1',
      '1.1.1.1',
      '::2',
      '2.2.2.2',
      '3.3.3.3',
    ]);
    assert.deepEqual(interleave([]), []);
  });
});
