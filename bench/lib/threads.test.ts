// cpuSplitSince counts the CPU of threads that exited inside the window (a proxy with a thread
// per connection, as tinyproxy 1.11). Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/threads.test.ts
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { cpuSplit, cpuSplitSince } from './threads.ts';

// A child that, on a line from its parent, runs a thread that spins for 400 ms of CPU and exits,
// then says so; it idles otherwise.
const CHILD = `
const { Worker } = require('node:worker_threads');
process.stdin.once('data', () => {
  const w = new Worker('const t = process.cpuUsage(); while (process.cpuUsage(t).user + process.cpuUsage(t).system < 400000);', { eval: true });
  w.on('exit', () => process.stdout.write('done\\n'));
});
process.stdout.write('ready\\n');
`;

describe('cpuSplitSince', () => {
  const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  after(() => child.kill());

  it('counts a thread that ran and exited inside the window', async () => {
    await once(child.stdout, 'data');
    const pid = child.pid as number;
    const before = cpuSplit(pid);
    child.stdin.write('go\n');
    await once(child.stdout, 'data');
    // The worker is gone: its schedstat with it. The thread-group total keeps its time.
    const cpu = cpuSplitSince(pid, before);
    assert.ok(cpu.total >= 0.35, `total ${cpu.total} s, expected the worker's 0.4 s`);
    assert.ok(cpu.other >= 0.3, `other ${cpu.other} s`);
    assert.ok(cpu.total < 5, `total ${cpu.total} s`);
  });
});
