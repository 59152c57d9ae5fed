import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { defaultSettings, generateYaml, parseSettings, s } from '../settings/index.ts';
import { defaultTelemetrySettings, TelemetrySettings } from './settings.ts';

const Root = s.object('Service settings.', { telemetry: TelemetrySettings });

describe('telemetry settings', () => {
  it('defaults to the same values the runtime uses without settings', () => {
    assert.deepEqual(defaultSettings(TelemetrySettings), defaultTelemetrySettings());
  });

  it('generates an annotated YAML section with the documented keys', () => {
    const yaml = generateYaml(Root);
    for (const line of [
      'telemetry:',
      '    output: terminal',
      '    format: text',
      '    verbosity: INFO',
      '    redact_keys: []',
      '    sampling_ratio: 1',
      '      endpoint: "http://127.0.0.1:4318/v1/traces"',
      '    service_name_format: metric_prefix',
      '    report_optional: false',
      '    addr: "127.0.0.1:0"',
    ]) {
      assert.ok(yaml.split('\n').includes(line), `generated YAML has "${line}":\n${yaml}`);
    }
    assert.match(yaml, /# Fraction of new traces that are sampled/);
    assert.match(yaml, /# Enables tracing\.\n {4}enabled: true/);
  });

  it('parses a config and names the key path of a bad value', () => {
    const v = parseSettings(Root, [
      {
        source: 'prod.yaml',
        value: {
          telemetry: {
            logging: { format: 'json', verbosity: 'WARN', redact_keys: ['token'] },
            tracing: { sampling_ratio: 0.01, otlp: { enabled: true, export_interval: '250ms' } },
            server: { addr: '/run/svc/telemetry.sock' },
          },
        },
      },
    ]);
    assert.equal(v.telemetry.logging.format, 'json');
    assert.deepEqual(v.telemetry.logging.redact_keys, ['token']);
    assert.equal(v.telemetry.tracing.otlp.export_interval, 250);
    assert.deepEqual(v.telemetry.server.addr, { kind: 'unix', path: '/run/svc/telemetry.sock' });
    const bad: [unknown, RegExp][] = [
      [
        { tracing: { sampling_ratio: 2 } },
        /telemetry\.tracing\.sampling_ratio: expected a number from 0 to 1, got 2 \(in bad\.yaml\)/,
      ],
      [{ logging: { verbosity: 'LOUD' } }, /telemetry\.logging\.verbosity: expected one of "TRACE"/],
      [{ logging: { output: 'syslog' } }, /telemetry\.logging\.output/],
      [{ metrics: { service_name_format: 'prefix' } }, /telemetry\.metrics\.service_name_format/],
      [{ server: { addr: 'nowhere' } }, /telemetry\.server\.addr/],
      [{ server: { port: 1 } }, /telemetry\.server\.port: unknown key/],
    ];
    for (const [telemetry, msg] of bad) {
      assert.throws(() => parseSettings(Root, [{ source: 'bad.yaml', value: { telemetry } }]), msg);
    }
  });

  it('is a zod schema', () => {
    assert.ok(TelemetrySettings instanceof z.ZodType);
  });
});
