/**
 * `--check` runs the checks start-up runs (Foundations' own sections here; Oxy's in
 * packages/oxy/test/check.test.ts): each bad value fails `--check` with one line naming the
 * key and the file, and the same file fails a start the same way, exit 2, without a stack and
 * before `main` runs (so a log file under /proc fails at once instead of spinning).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('./testdata/service.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fnd-checks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  writeFileSync(join(dir, name), text);
  return name;
}

function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FIXTURE, ...args], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

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
