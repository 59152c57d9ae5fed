/** The off-ramp header's addresses: families as HAProxy writes them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headerAddresses } from './connect.ts';

test('IPv4-mapped addresses go out as IPv4; a mixed pair as IPv6 with the IPv4 side mapped; a non-IP as UNSPEC', () => {
  const at = (host: string, port: number) => ({ host, port });
  assert.deepEqual(headerAddresses(at('::ffff:192.0.2.1', 1), at('::ffff:127.0.0.1', 2)), {
    family: 'inet',
    source: at('192.0.2.1', 1),
    destination: at('127.0.0.1', 2),
  });
  assert.deepEqual(headerAddresses(at('192.0.2.1', 1), at('2001:db8::1', 2)), {
    family: 'inet6',
    source: at('::ffff:192.0.2.1', 1),
    destination: at('2001:db8::1', 2),
  });
  assert.deepEqual(headerAddresses(at('::1', 1), at('::1', 2))?.family, 'inet6');
  assert.equal(headerAddresses(at('', 0), at('127.0.0.1', 2)), null);
});
