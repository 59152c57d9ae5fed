/**
 * A CONNECT-IP scope made of resolved addresses: its routes (each address alone, IPv4 first,
 * only the families leased) and the destination check that `packetCheck` uses. The resolution
 * itself runs on a real proxy in test/masque-connect-ip-dns.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidr } from '../../protocols/ip/address.ts';
import { buildIp, udpDatagram } from '../../protocols/ip/builder.ts';
import { IP_PROTO, parseIp } from '../../protocols/ip/packet.ts';
import { packetCheck } from './connect-ip.ts';
import { type IpScope, inScope, literalScope, scopeRoutes } from './ip-scope.ts';

const resolved: IpScope = {
  prefixes: ['192.0.2.7/32', '192.0.2.9/32', '2001:db8::5/128'].map(parseCidr),
  ipproto: 6,
};
const lease = { v4: '100.64.0.2', v6: 'fd00:64::2' };
const udp = (src: string, dst: string) =>
  buildIp({ src, dst, protocol: IP_PROTO.UDP, payload: udpDatagram(1, 2, Buffer.from('x')) });

describe('a scope of resolved addresses', () => {
  it('advertises each address as a one-address range with the protocol, for the leased families', () => {
    assert.deepEqual(scopeRoutes(resolved, lease), [
      { version: 4, start: '192.0.2.7', end: '192.0.2.7', protocol: 6 },
      { version: 4, start: '192.0.2.9', end: '192.0.2.9', protocol: 6 },
      { version: 6, start: '2001:db8::5', end: '2001:db8::5', protocol: 6 },
    ]);
    assert.deepEqual(scopeRoutes(resolved, { v4: '100.64.0.2', v6: null }), [
      { version: 4, start: '192.0.2.7', end: '192.0.2.7', protocol: 6 },
      { version: 4, start: '192.0.2.9', end: '192.0.2.9', protocol: 6 },
    ]);
  });

  it('lets only packets to those addresses through', () => {
    const at = (p: Buffer) => {
      const ip = parseIp(p);
      return inScope(resolved, ip.buf, ip.dstOffset, ip.addrLength);
    };
    assert.equal(at(udp('100.64.0.2', '192.0.2.7')), true);
    assert.equal(at(udp('100.64.0.2', '192.0.2.8')), false);
    assert.equal(at(udp('fd00:64::2', '2001:db8::5')), true);
    assert.equal(at(udp('fd00:64::2', '2001:db8::6')), false);
    const check = packetCheck({ ...resolved, ipproto: 17 }, lease, { v4: null, v6: null });
    assert.equal(check(udp('100.64.0.2', '192.0.2.9')), null);
    assert.equal(check(udp('100.64.0.2', '192.0.2.10')), 'scope');
  });

  it('refuses to build a DNS-name scope without resolving it', () => {
    assert.throws(() =>
      literalScope({
        kind: 'connect-ip',
        target: { kind: 'dns', host: 'a.test' },
        ipproto: '*',
        capsuleProtocol: true,
      }),
    );
  });
});
