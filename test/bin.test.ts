/**
 * The `oxy` command as systemd or a shell script runs it: through the npm bin link, with a
 * plain PATH on which `node` is the machine's own (older) Node or missing. The launcher must
 * still find the Node 24 the repository pins.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const root = path.join(import.meta.dirname, '..');
const plainEnv = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: process.env.HOME ?? '/root' };

for (const bin of ['node_modules/.bin/oxy', 'packages/oxy/bin/oxy']) {
  test(`${bin} runs on the pinned Node with a plain PATH`, () => {
    const version = spawnSync(path.join(root, bin), ['--version'], { env: plainEnv, encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^oxy \d+\.\d+\.\d+/);
    // The generated config proves TypeScript ran, which only Node >= 24 does without flags.
    const generated = spawnSync(path.join(root, bin), ['--generate', '-'], {
      env: plainEnv,
      encoding: 'utf8',
    });
    assert.equal(generated.status, 0, generated.stderr);
    assert.match(generated.stdout, /^endpoints:/m);
  });
}

test('the launcher runs from another working directory', () => {
  const r = spawnSync(path.join(root, 'node_modules/.bin/oxy'), ['--version'], {
    env: plainEnv,
    cwd: '/',
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
});
