/**
 * The CONNECT-IP address pool and the per-packet checks: gateways, leases until exhaustion,
 * release and reuse, bad prefixes at start-up; routes from the scope; packets judged by
 * source, destination and protocol.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isOxyError } from '../../errors.ts';
import { buildIp, icmpMessage, udpDatagram } from '../../protocols/ip/builder.ts';
import { IP_PROTO } from '../../protocols/ip/packet.ts';
import type { ConnectIpRequest } from '../../protocols/masque/request.ts';
import { packetCheck } from './connect-ip.ts';
import { IpPool } from './ip-pool.ts';
import { literalScope, scopeRoutes } from './ip-scope.ts';

describe('IpPool', () => {
  it('gives the gateway the first address and leases the rest until exhausted', () => {
    const pool = new IpPool('10.0.0.0/29', '', 'p');
    assert.deepEqual(pool.gateways, { v4: '10.0.0.1', v6: null });
    const leases = Array.from({ length: 5 }, () => pool.lease());
    assert.deepEqual(
      leases.map((l) => l?.v4),
      ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6'],
    );
    assert.equal(pool.lease(), null, '10.0.0.7 is the broadcast address');
    leases[2]!.release();
    leases[2]!.release(); // twice is once
    assert.equal(pool.leased, 4);
    assert.equal(pool.lease()?.v4, '10.0.0.4');
    assert.equal(pool.lease(), null);
  });

  it('leases one address of each family, or none', () => {
    const pool = new IpPool('10.0.0.0/30', 'fd00::/126', 'p');
    assert.deepEqual(pool.gateways, { v4: '10.0.0.1', v6: 'fd00::1' });
    const a = pool.lease();
    assert.deepEqual([a?.v4, a?.v6], ['10.0.0.2', 'fd00::2']);
    assert.equal(pool.lease(), null, 'IPv4 is exhausted');
    assert.equal(pool.leased, 1, 'the IPv6 address taken for the failed lease was given back');
    const v6only = new IpPool('', 'fd00::/64', 'p');
    assert.deepEqual([v6only.lease()?.v4, v6only.lease()?.v6], [null, 'fd00::3']);
  });

  it('refuses prefixes that leave nothing, of the wrong family, or none at all', () => {
    for (const [v4, v6] of [
      ['10.0.0.0/31', ''],
      ['fd00::/64', ''],
      ['', '10.0.0.0/8'],
      ['', ''],
      ['10.0.0.0/33', ''],
    ]) {
      assert.throws(
        () => new IpPool(v4!, v6!, 'endpoints.main.masque.ip_pool'),
        (e: unknown) => isOxyError(e) && e.code === 'OXY_ERR_INVALID_APP',
        `${v4} ${v6}`,
      );
    }
  });
});

const scope = (target: ConnectIpRequest['target'], ipproto: ConnectIpRequest['ipproto']) =>
  literalScope({ kind: 'connect-ip', target, ipproto, capsuleProtocol: true });
const lease = { v4: '100.64.0.2', v6: 'fd00:64::2' };
const gateways = { v4: '100.64.0.1', v6: 'fd00:64::1' };
const udp = (src: string, dst: string) =>
  buildIp({ src, dst, protocol: IP_PROTO.UDP, payload: udpDatagram(1, 2, Buffer.from('x')) });
const echo = (src: string, dst: string) =>
  buildIp({ src, dst, protocol: IP_PROTO.ICMP, payload: icmpMessage(8, 0, 1, Buffer.alloc(0)) });

describe('scope', () => {
  it('advertises the prefix of the target, or everything for *', () => {
    assert.deepEqual(
      scopeRoutes(scope({ kind: 'prefix', version: 4, address: '192.0.2.0', prefixLength: 24 }, 17), lease),
      [{ version: 4, start: '192.0.2.0', end: '192.0.2.255', protocol: 17 }],
    );
    assert.deepEqual(scopeRoutes(scope({ kind: 'any' }, '*'), lease), [
      { version: 4, start: '0.0.0.0', end: '255.255.255.255', protocol: 0 },
      { version: 6, start: '::', end: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', protocol: 0 },
    ]);
  });

  it('judges packets by source, destination prefix and protocol; the gateway answers pings', () => {
    const check = packetCheck(
      scope({ kind: 'prefix', version: 4, address: '192.0.2.0', prefixLength: 24 }, 17),
      lease,
      gateways,
    );
    assert.equal(check(udp('100.64.0.2', '192.0.2.7')), null);
    assert.equal(check(udp('100.64.0.3', '192.0.2.7')), 'source');
    assert.equal(check(udp('100.64.0.2', '198.51.100.7')), 'scope');
    assert.equal(check(echo('100.64.0.2', '192.0.2.7')), 'scope', 'ICMP where ipproto is 17');
    assert.equal(check(echo('100.64.0.2', '100.64.0.1')), null, 'a ping to the gateway');
    assert.equal(check(udp('fd00:64::2', '2001:db8::1')), 'scope', 'IPv6 outside an IPv4 scope');
    assert.equal(check(Buffer.from([0x45, 0, 0])), 'malformed');
  });
});
