/**
 * The addon's seccomp layer on the real kernel, each case in a child process (a filter can
 * never be removed): TSYNC reaches every thread, without it the thread pool escapes, rules
 * and the default action apply, and bad filters are named errors before anything is installed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { seccomp } from 'native';

const cwd = fileURLToPath(new URL('..', import.meta.url));

/** Runs `body` (ESM, with `seccomp` imported) in a child; returns its JSON output and exit. */
function inChild(body: string): { out: unknown; signal: string | null; stderr: string } {
  const script = `import { seccomp } from 'native'; import fs from 'node:fs'; import os from 'node:os';\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd, encoding: 'utf8' });
  return { out: r.stdout ? JSON.parse(r.stdout) : null, signal: r.signal, stderr: r.stderr };
}

test('with TSYNC every thread is filtered, and a denied chmod from the thread pool gets the errno', () => {
  const r = inChild(`
    await fs.promises.stat('.'); // start the libuv thread pool first
    seccomp.install({ defaultAction: { kind: 'allow' }, rules: [{ action: { kind: 'return_error', errno: 1 }, syscalls: ['chmod', 'fchmodat'] }] });
    const modes = seccomp.threads().map((t) => t.mode);
    const err = await fs.promises.chmod('.', 0o755).then(() => 'allowed', (e) => e.code);
    console.log(JSON.stringify({ modes, err }));`);
  const { modes, err } = r.out as { modes: number[]; err: string };
  assert.ok(modes.length > 3 && modes.every((m) => m === 2), r.stderr);
  assert.equal(err, 'EPERM');
});

test('without TSYNC the thread pool escapes the filter (why it is the default)', () => {
  const r = inChild(`
    await fs.promises.stat('.');
    seccomp.install({ allThreads: false, defaultAction: { kind: 'allow' }, rules: [{ action: { kind: 'return_error', errno: 1 }, syscalls: ['chmod', 'fchmodat'] }] });
    let sync = 'allowed'; try { fs.chmodSync('.', 0o755) } catch (e) { sync = e.code }
    const pool = await fs.promises.chmod('.', 0o755).then(() => 'allowed', (e) => e.code);
    console.log(JSON.stringify({ sync, pool, others: seccomp.threads().filter((t) => t.mode !== 2).length }));`);
  const out = r.out as { sync: string; pool: string; others: number };
  assert.equal(out.sync, 'EPERM');
  assert.equal(out.pool, 'allowed');
  assert.ok(out.others > 0);
});

test('kill_process as a rule action kills the whole process with SIGSYS', () => {
  const r = inChild(`
    seccomp.install({ defaultAction: { kind: 'allow' }, rules: [{ action: { kind: 'kill_process' }, syscalls: ['setpriority'] }] });
    os.setPriority(0, 1);
    console.log('null');`);
  assert.equal(r.signal, 'SIGSYS');
});

test('a later rule wins for a syscall named twice', () => {
  const r = inChild(`
    seccomp.install({ defaultAction: { kind: 'allow' }, rules: [
      { action: { kind: 'kill_process' }, syscalls: ['setpriority'] },
      { action: { kind: 'return_error', errno: 13 }, syscalls: ['setpriority'] } ] });
    let code = 'allowed'; try { os.setPriority(0, 1) } catch (e) { code = e.info.code }
    console.log(JSON.stringify(code));`);
  assert.equal(r.out, 'EACCES');
});

test('bad filters are refused before anything is installed', () => {
  assert.deepEqual(seccomp.unknownSyscalls(['openat', 'opne', 'open']), ['opne']);
  if (process.arch === 'x64') assert.equal(seccomp.syscallName(90), 'chmod');
  assert.equal(seccomp.syscallName(-5), null);
  assert.throws(
    () =>
      seccomp.install({
        defaultAction: { kind: 'allow' },
        rules: [{ action: { kind: 'trap' }, syscalls: ['opne'] }],
      }),
    { code: 'NATIVE_ERR_EINVAL', message: /unknown syscall name\(s\) in the seccomp filter: opne/ },
  );
  assert.throws(
    () => seccomp.install({ defaultAction: { kind: 'return_error', errno: 0 }, rules: [] }),
    /errno from 1 to 4095/,
  );
  assert.ok(
    seccomp.threads().every((t) => t.mode === 0),
    'this test process stays unfiltered',
  );
});
