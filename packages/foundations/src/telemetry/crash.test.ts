import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./testdata/crash-child.ts', import.meta.url));

function runChild(
  mode: string,
): Promise<{ code: number | null; stdout: string; stderr: string; endedAt: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, endedAt: Date.now() }));
  });
}

function crashRecord(stderr: string): Record<string, unknown> {
  const line = stderr.split('\n').find((l) => l.includes('"crash"'));
  assert.ok(line, `a crash record on stderr, got: ${stderr}`);
  return JSON.parse(line);
}

describe('crash reporting (real child processes)', () => {
  it('logs an uncaught exception with the context fields, then exits non-zero', async () => {
    const r = await runChild('exception');
    assert.equal(r.code, 1);
    const rec = crashRecord(r.stderr);
    assert.equal(rec.level, 'ERROR');
    assert.equal(rec.crash, 'uncaughtException');
    assert.equal(rec.conn_id, 42);
    assert.equal(rec.url, '/crash');
    assert.equal(rec.service, 'crashy');
    assert.equal((rec.err as { message: string }).message, 'timer exploded');
    assert.match((rec.err as { stack: string }).stack, /crash-child\.ts/);
  });

  it('is installed by initTelemetry', async () => {
    const r = await runChild('init');
    assert.equal(r.code, 1);
    const rec = crashRecord(r.stderr);
    assert.equal(rec.crash, 'uncaughtException');
    assert.equal(rec.conn_id, 42);
    assert.equal(rec.service, 'crashy');
  });

  it('logs an unhandled rejection with the context fields', async () => {
    const r = await runChild('rejection');
    assert.equal(r.code, 1);
    const rec = crashRecord(r.stderr);
    assert.equal(rec.crash, 'unhandledRejection');
    assert.equal(rec.conn_id, 42);
    assert.equal(rec.url, '/crash');
  });

  it('finds the context of an error thrown synchronously out of apply', async () => {
    const r = await runChild('sync');
    assert.equal(r.code, 1);
    const rec = crashRecord(r.stderr);
    assert.equal((rec.err as { message: string }).message, 'sync exploded');
    assert.equal(rec.url, '/crash');
  });

  it('lets an app hook forward the crash before the exit', async () => {
    const r = await runChild('hook');
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout), {
      hook: 'uncaughtException',
      fields: { conn_id: 42, url: '/crash' },
      message: 'timer exploded',
    });
  });

  it('exits even when the hook never finishes', async () => {
    const r = await runChild('hanging-hook');
    assert.equal(r.code, 1);
    // From the crash (its record's time) to the exit, not from the spawn: a loaded machine may
    // take seconds to start the child; the hook's bound is 300 ms.
    const ms = r.endedAt - Date.parse(String(crashRecord(r.stderr).time));
    assert.ok(ms < 5000, `exited ${ms} ms after the crash`);
  });
});
