/**
 * `--check` runs the checks start-up runs (Foundations' own sections here; Oxy's in
 * packages/oxy/test/check.test.ts): each bad value fails `--check` with one line naming the
 * key and the file, and the same file fails a start the same way, exit 2, without a stack and
 * before `main` runs (so a log file under /proc fails at once instead of spinning).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { serviceRunner } from './testdata/run-service.ts';

const { dir, file, run } = serviceRunner('fnd-checks-');

/** `--check` and a start with `name` both fail with exit 2 and one line matching `line`. */
async function failsBoth(name: string, text: string, line: RegExp): Promise<void> {
  const f = file(name, text);
  const check = await run('--check', '-c', f);
  assert.equal(check.code, 2, check.stderr);
  assert.match(check.stderr, line);
  assert.equal(check.stderr.split('\n').length, 2, 'one line');
  const start = await run('-c', f);
  assert.equal(start.code, 2, start.stderr);
  assert.match(start.stderr, line);
  assert.equal(start.stderr.split('\n').length, 2, 'one line, no stack');
  assert.doesNotMatch(start.stdout, /^main /m, 'main never ran');
}

test('restart.socket must be an absolute path', async () => {
  await failsBoth(
    'rel.yaml',
    'restart:\n  socket: run/x.sock\n',
    /^fixture: restart\.socket: must be an absolute path .*"run\/x\.sock" \(in rel\.yaml\)$/m,
  );
});

test("restart.socket's directory must exist", async () => {
  await failsBoth(
    'nodir.yaml',
    'restart:\n  socket: /nonexistent-dir/x.sock\n',
    /^fixture: restart\.socket: directory \/nonexistent-dir does not exist \(in nodir\.yaml\)$/m,
  );
});

test('telemetry.logging.file under /proc fails fast with the reason', async () => {
  await failsBoth(
    'proc.yaml',
    'telemetry:\n  logging:\n    output: file\n    file: /proc/self/status\n',
    /^fixture: telemetry\.logging\.file: \/proc\/self\/status is under \/proc, a virtual file system, not a place to write to \(in proc\.yaml\)$/m,
  );
});

test('a configuration --check accepts starts', async () => {
  const f = file(
    'good.yaml',
    `restart:\n  socket: ${join(dir, 'ok.sock')}\ntelemetry:\n  logging:\n    output: file\n    file: ${join(dir, 'logs', 'x.log')}\n`,
  );
  const check = await run('--check', '-c', f);
  assert.equal(check.code, 0, check.stderr);
  const start = await run('-c', f);
  assert.equal(start.code, 0, start.stderr);
  assert.match(start.stdout, /^main /m);
});
