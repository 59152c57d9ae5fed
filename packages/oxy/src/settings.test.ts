/**
 * Oxy's settings schema as a whole: every duration key, in every section and endpoint kind,
 * refuses a value past the longest Node.js timer (a longer timer fires after 1 ms: a timeout
 * that expires at once, a sweep that spins), and `proxy_protocol.header_timeout` has no 0s.
 * The CLI's side (`--check` and a start, one line naming the key and the file) is in
 * test/check.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  parseDuration,
  parseSettings,
  SettingsError,
  settingsNode,
  variantSchema,
} from 'foundations/settings';
import type { z } from 'zod';
import { buildSettingsSchema } from './settings.ts';

const schema = buildSettingsSchema({}, 'oxy');

interface DurationKey {
  readonly path: string;
  /** A config setting this key (and nothing else) to `text`. */
  readonly config: (text: string) => unknown;
}

/** Every leaf whose default is a duration, with the config that sets it; maps get one entry `main`. */
function durationKeys(
  node: z.ZodType,
  path: string,
  wrap: (v: unknown) => unknown,
  out: DurationKey[] = [],
): DurationKey[] {
  const n = settingsNode(node);
  if (n?.kind === 'object') {
    for (const [key, field] of Object.entries(n.shape)) {
      durationKeys(field, path === '' ? key : `${path}.${key}`, (v) => wrap({ [key]: v }), out);
    }
  } else if (n?.kind === 'map') {
    durationKeys(n.value, `${path}.main`, (v) => wrap({ main: v }), out);
  } else if (n?.kind === 'variants') {
    for (const kind of Object.keys(n.variants)) {
      const section = variantSchema(n, { [n.key]: kind }) as z.ZodType;
      durationKeys(section, `${path}[${kind}]`, (v) => wrap({ ...(v as object), [n.key]: kind }), out);
    }
  } else if (n?.kind === 'leaf' && typeof n.default === 'string' && parseDuration(n.default) !== undefined) {
    out.push({ path, config: (text) => wrap(text) });
  }
  return out;
}

function parse(value: unknown) {
  return parseSettings(schema, [{ source: 'f.yaml', value }]);
}

describe('duration settings', () => {
  const keys = durationKeys(schema, '', (v) => v);

  it('are found in every section and endpoint kind', () => {
    const paths = keys.map((k) => k.path);
    for (const p of [
      'endpoints.main[http].proxy_protocol.header_timeout',
      'endpoints.main[http].tunnel_idle_timeout',
      'endpoints.main[udp].udp.idle_timeout',
      'endpoints.main[ip_gue].gue.idle_timeout',
      'egress.dns.cache.max_ttl',
      'restart.drain_timeout',
      'audit.retry_interval',
    ]) {
      assert.ok(paths.includes(p), `${p} in ${paths.join(', ')}`);
    }
  });

  it('all refuse a value past the longest timer (2^31-1 ms) and accept 24d', () => {
    for (const key of keys) {
      const where = key.path.replace(/\[\w+\]/, '');
      assert.doesNotThrow(() => parse(key.config('24d')), key.path);
      assert.throws(
        () => parse(key.config('25d')),
        (e: unknown) =>
          e instanceof SettingsError &&
          e.path === where &&
          e.message ===
            `${where}: expected a duration like "10s" or "250ms", got "25d" ` +
              '(longer than 24d20h31m23s647ms, the longest Node.js timer) (in f.yaml)',
        key.path,
      );
    }
  });

  it('proxy_protocol.header_timeout refuses 0s, which would race the first read', () => {
    for (const protocol of ['http', 'tcp']) {
      const value = (text: string) => ({
        endpoints: { main: { protocol, proxy_protocol: { enabled: true, header_timeout: text } } },
      });
      assert.equal(
        (parse(value('1ms')) as { endpoints: { main: { proxy_protocol: { header_timeout: number } } } })
          .endpoints.main.proxy_protocol.header_timeout,
        1,
      );
      assert.throws(() => parse(value('0s')), {
        message:
          'endpoints.main.proxy_protocol.header_timeout: expected a duration like "10s" or "250ms", ' +
          'got "0s" (shorter than 1ms) (in f.yaml)',
      });
    }
  });
});
