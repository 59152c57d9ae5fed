/**
 * The harness's processes start in sessions of their own unless `BENCH_SESSIONS=shared`: the
 * session id (field 6 of /proc/PID/stat) of a started process is its own PID, not the harness's.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Proc, startProcess, stopProcess } from './procs.ts';

const started: Proc[] = [];
after(async () => {
  for (const p of started) await stopProcess(p, 1000);
});

/** The session id of a process, from /proc/PID/stat (the fields after the command's closing paren). */
function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

for (const mode of ['own', 'shared'] as const) {
  test(`BENCH_SESSIONS=${mode}: a started process is ${mode === 'own' ? 'in a session of its own' : "in the harness's session"}`, async () => {
    const before = process.env.BENCH_SESSIONS;
    process.env.BENCH_SESSIONS = mode;
    try {
      const p = startProcess('sleeper', 'sleep', ['30'], {
        logFile: join(tmpdir(), `procs-test-${process.pid}.log`),
      });
      started.push(p);
      const sid = sessionOf(p.pid);
      if (mode === 'own') assert.equal(sid, p.pid);
      else assert.equal(sid, sessionOf(process.pid));
    } finally {
      if (before === undefined) delete process.env.BENCH_SESSIONS;
      else process.env.BENCH_SESSIONS = before;
    }
  });
}
