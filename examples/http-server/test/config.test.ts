/**
 * The committed config.yaml is exactly what `--generate` prints today, and it loads back to
 * the defaults. If this fails after a settings change, run `npm run generate-config`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { defaultSettings, loadSettings } from 'foundations/settings';
import { HttpServerSettings } from '../settings.ts';

const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
const CONFIG = fileURLToPath(new URL('../config.yaml', import.meta.url));

test('config.yaml is up to date with the settings schema', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [MAIN, '--generate', '-']);
  assert.equal(stdout, readFileSync(CONFIG, 'utf8'), 'config.yaml is stale: run `npm run generate-config`');
});

test('config.yaml loads back to the default settings', () => {
  assert.deepEqual(loadSettings(HttpServerSettings, [CONFIG]), defaultSettings(HttpServerSettings));
});

test('the defaults are the seed example: one endpoint, /hello and /foo', () => {
  const { endpoints } = defaultSettings(HttpServerSettings);
  assert.deepEqual(endpoints, {
    'Example endpoint': {
      addr: { kind: 'tcp', host: '127.0.0.1', port: 0 },
      routes: {
        '/hello': { status_code: 200, response: 'World' },
        '/foo': { status_code: 403, response: 'bar' },
      },
    },
  });
});
