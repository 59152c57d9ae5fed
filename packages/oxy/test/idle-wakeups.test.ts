/**
 * An idle proxy sleeps: the `oxy` command with an `http` endpoint and a `tcp` endpoint (whose
 * connections the addon's reactor thread accepts), or the `tcp` endpoint alone (the reactor then
 * runs on the JS loop), no traffic, wakes at most a handful of times a second, all threads
 * together. On a two-core machine every wake-up of an idle proxy is CPU taken
 * from the work beside it. Counted from /proc/<pid>/task/<tid>/status (voluntary context
 * switches: the thread slept and was woken) over two seconds. The bound is generous (a loaded
 * test machine delays wake-ups, it does not add them); what it catches is a periodic timer or an
 * idle handle that keeps the loop polling (before this test: prom-client's event-loop delay
 * histogram, a 10 ms libuv timer, about 100 wake-ups a second).
 *
 * Linux only (/proc).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startOxyCli, tcpEndpointLines, threadFiles } from './fixtures/oxy-cli.ts';

/** Wake-ups per second, all threads, that an idle proxy may not exceed (measured: 2 to 5). */
const MAX_WAKES_PER_S = 25;

/** Voluntary context switches of every thread of pid, by thread id. */
function switches(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const [tid, status] of threadFiles(pid, 'status')) {
    const m = /^voluntary_ctxt_switches:\s*(\d+)/m.exec(status);
    if (m !== null) out.set(tid, Number(m[1]));
  }
  return out;
}

test('an idle proxy wakes at most a handful of times a second', {
  skip: process.platform !== 'linux',
}, async () => {
  await assertIdle(['  main:', '    addr: "127.0.0.1:0"']);
});

test('an idle proxy of tcp endpoints alone (the reactor on the JS loop) wakes as seldom', {
  skip: process.platform !== 'linux',
}, async () => {
  await assertIdle([]);
});

/** Starts `oxy` with `extra` endpoints beside a `tcp` one, passes one connection, then counts. */
async function assertIdle(extra: string[]): Promise<void> {
  const target = net.createServer((s) => s.end());
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  after(() => target.close());
  const targetPort = (target.address() as net.AddressInfo).port;
  const oxy = await startOxyCli([...extra, ...tcpEndpointLines(`127.0.0.1:${targetPort}`)]);
  // One connection through the tcp endpoint first: the reactor and its accepting run.
  const { host, port } = oxy.address('l4');
  await new Promise<void>((resolve, reject) => {
    const c = net.connect(port, host);
    c.on('error', reject);
    c.on('close', () => resolve());
    c.resume();
  });
  await sleep(1000); // start-up's and that connection's work settles
  const pid = oxy.pid;
  const before = switches(pid);
  const t0 = performance.now();
  await sleep(2000);
  const afterSwitches = switches(pid);
  const seconds = (performance.now() - t0) / 1000;
  let wakes = 0;
  const perThread: string[] = [];
  for (const [tid, n] of afterSwitches) {
    const d = n - (before.get(tid) ?? 0);
    wakes += d;
    if (d > 0) {
      const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      perThread.push(`${comm} ${d}`);
    }
  }
  const rate = wakes / seconds;
  assert.ok(
    rate <= MAX_WAKES_PER_S,
    `${rate.toFixed(1)} wake-ups/s (threads: ${perThread.join(', ')}); at most ${MAX_WAKES_PER_S}`,
  );
}
