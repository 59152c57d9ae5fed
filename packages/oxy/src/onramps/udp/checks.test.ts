/**
 * The checks of a `udp` endpoint's keys: sizes outside one UDP datagram and a zero idle timeout
 * are refused with their key, a target left to a hook is a warning, and the idle sweep stays a
 * timer Node can keep. The CLI's side (exit 2 at `--check` and at a start) is in
 * test/check.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSettings } from 'foundations/settings';
import { normalizeSettings } from '../../proxy.ts';
import { type AppSettings, buildSettingsSchema, type UdpEndpointSettings } from '../../settings.ts';
import { udpSettingsProblems } from './checks.ts';
import { sweepInterval } from './onramp.ts';

function endpoint(value: Record<string, unknown>): UdpEndpointSettings {
  const ep = { protocol: 'udp', addr: '127.0.0.1:0', ...value };
  const settings = parseSettings(buildSettingsSchema({}, 'oxy'), [
    { source: 'test.yaml', value: { endpoints: { u: ep } } },
  ]);
  return normalizeSettings(settings as AppSettings).endpoints.u as UdpEndpointSettings;
}

const udp = (keys: Record<string, unknown>) => endpoint({ udp: { target: '192.0.2.1:53', ...keys } });

describe('udpSettingsProblems', () => {
  it('accepts 1B, the default and 65535B', () => {
    for (const size of ['1B', '65507B', '65535B'])
      assert.deepEqual(udpSettingsProblems('u', udp({ max_datagram_size: size })), [], size);
  });

  it('refuses 0B and more than one datagram holds, naming the key', () => {
    for (const [size, bytes] of [
      ['0B', 0],
      ['100KiB', 102400],
      ['65536B', 65536],
    ] as const) {
      const p = udpSettingsProblems('u', udp({ max_datagram_size: size }));
      assert.equal(p.length, 1, size);
      assert.equal(p[0]?.path, 'endpoints.u.udp.max_datagram_size');
      assert.equal(
        p[0]?.message,
        `expected a size from 1B to 65535B (the largest UDP datagram), got ${bytes}B`,
      );
    }
  });

  it('refuses an idle_timeout of 0s, naming the key', () => {
    const p = udpSettingsProblems('u', udp({ idle_timeout: '0s' }));
    assert.deepEqual(
      p.map((x) => x.path),
      ['endpoints.u.udp.idle_timeout'],
    );
    assert.match(p[0]?.message ?? '', /above 0s/);
    assert.deepEqual(udpSettingsProblems('u', udp({ idle_timeout: '1ms' })), []);
  });
});

describe('sweepInterval', () => {
  it('is a quarter of the idle timeout, from 50 ms to a minute, so a long one never overflows a timer', () => {
    assert.equal(sweepInterval(60_000), 15_000);
    assert.equal(sweepInterval(100), 50);
    assert.equal(sweepInterval(100 * 86_400_000), 60_000);
  });
});
