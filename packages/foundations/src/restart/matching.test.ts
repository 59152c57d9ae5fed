/**
 * The rules for taking an inherited socket: by name when its address fits (port 0 keeps any
 * port, host names compare as written), by address only at exactly the address asked, and for
 * UDP only with the same bind-time options.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ListenAddr } from '../settings/net.ts';
import { bindOptionsFit, bindOptionsOf, fitsByAddress, fitsByName, sameHost } from './matching.ts';

const tcp = (host: string, port: number): ListenAddr => ({ kind: 'tcp', host, port });
const unix = (path: string): ListenAddr => ({ kind: 'unix', path });

test('by name: the address the settings ask for, port 0 accepting the port the kernel chose', () => {
  const bound = tcp('127.0.0.1', 21055);
  assert.ok(fitsByName(tcp('127.0.0.1', 21055), bound, tcp('127.0.0.1', 21055)));
  assert.ok(!fitsByName(tcp('127.0.0.1', 21075), bound, tcp('127.0.0.1', 21055)), 'a moved port');
  assert.ok(!fitsByName(tcp('0.0.0.0', 21055), bound, tcp('127.0.0.1', 21055)), 'a moved host');
  assert.ok(fitsByName(tcp('127.0.0.1', 0), bound, tcp('127.0.0.1', 0)), 'port 0 keeps the inherited port');
  assert.ok(!fitsByName(tcp('::1', 0), bound, tcp('127.0.0.1', 0)), 'port 0 on another host');
  assert.ok(fitsByName(tcp('0:0::1', 80), tcp('::1', 80), null), 'IPv6 forms are normalised');
  assert.ok(fitsByName(unix('/run/a.sock'), unix('/run/a.sock'), null));
  assert.ok(!fitsByName(unix('/run/b.sock'), unix('/run/a.sock'), null));
  assert.ok(!fitsByName(unix('/run/a.sock'), bound, null), 'another kind of address');
});

test('by name: a host name compares with the host the previous settings gave', () => {
  const bound = tcp('127.0.0.1', 8080);
  assert.ok(fitsByName(tcp('localhost', 8080), bound, tcp('LocalHost', 8080)));
  assert.ok(!fitsByName(tcp('example.test', 8080), bound, tcp('localhost', 8080)));
  assert.ok(fitsByName(tcp('localhost', 8080), bound, null), 'unknown settings: cannot tell, fits');
  assert.ok(!fitsByName(tcp('localhost', 9090), bound, null), 'but the port still counts');
  assert.ok(!fitsByName(tcp('127.0.0.2', 8080), bound, null), 'an IP address is compared');
});

test('by address: exactly the address asked, never port 0', () => {
  assert.ok(fitsByAddress(tcp('127.0.0.1', 8080), tcp('127.0.0.1', 8080), null));
  assert.ok(fitsByAddress(tcp('localhost', 8080), tcp('127.0.0.1', 8080), tcp('localhost', 8080)));
  assert.ok(!fitsByAddress(tcp('localhost', 8080), tcp('127.0.0.1', 8080), null), 'a name is not resolved');
  assert.ok(!fitsByAddress(tcp('127.0.0.1', 0), tcp('127.0.0.1', 8080), tcp('127.0.0.1', 0)));
  assert.ok(!fitsByAddress(tcp('0.0.0.0', 8080), tcp('127.0.0.1', 8080), null));
  assert.ok(fitsByAddress(unix('/run/a.sock'), unix('/run/a.sock'), null));
});

test('hosts: IPv6 normalised, names case-insensitive, IPv4 as written', () => {
  assert.ok(sameHost('::1', '0:0:0:0:0:0:0:1'));
  assert.ok(sameHost('LOCALHOST', 'localhost'));
  assert.ok(!sameHost('127.0.0.1', 'localhost'));
});

test('UDP bind options: the reuse flags and ipv6Only must be what is asked; unknown fits', () => {
  assert.ok(bindOptionsFit({}, {}, '127.0.0.1'));
  assert.ok(
    bindOptionsFit({ reusePort: false, maxDatagramSize: 1500 }, {}, '127.0.0.1'),
    'defaults are false',
  );
  assert.ok(!bindOptionsFit({ reusePort: true }, {}, '127.0.0.1'));
  assert.ok(!bindOptionsFit({}, { reuseAddr: true }, '127.0.0.1'));
  assert.ok(bindOptionsFit({ reusePort: true }, null, '127.0.0.1'), 'unknown (systemd, older version)');
  assert.ok(bindOptionsFit({}, { ipv6Only: true }, '::'), 'ipv6Only unset: any');
  assert.ok(!bindOptionsFit({ ipv6Only: false }, { ipv6Only: true }, '::'));
  assert.ok(bindOptionsFit({ ipv6Only: false }, { ipv6Only: true }, '0.0.0.0'), 'not on IPv4');
  assert.deepEqual(bindOptionsOf({ reusePort: true, receiveBufferSize: 1 << 20, ipv6Only: false }), {
    reusePort: true,
    ipv6Only: false,
  });
});
