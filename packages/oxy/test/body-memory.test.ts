/**
 * A body hook that rewrites a 100 MiB streamed response must not make the proxy hold it: the
 * proxy runs as a child process (`fixtures/body-rewrite-app.ts`), its RSS is sampled from
 * /proc while the response streams through, and the growth over the warmed-up baseline must
 * stay under 32 MiB. The client spot-checks that the bytes arrived rewritten.
 *
 * The child runs with `--expose-gc` and collects every 100 ms (see the fixture): without that,
 * V8 lets dead socket buffers pile up to about 64 MiB before collecting, with or without a
 * body hook (measured here: ~53 MiB growth for the same transfer with only a head hook), which
 * says nothing about what the proxy holds. `OXY_TEST_BODY_MODE=none` runs the comparison.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type AppProcess, startAppProcess } from '../src/testing/app.ts';
import { type BodyUpstream, patternByte, startBodyUpstream } from './fixtures/body-upstream.ts';

const MiB = 1024 * 1024;
/** What the app XORs each byte with (0 when run with only a head hook, for comparison). */
const XOR = process.env.OXY_TEST_BODY_MODE === 'none' ? 0 : 0x20;
let up: BodyUpstream;
let proxy: AppProcess;

before(async () => {
  up = await startBodyUpstream();
  proxy = await startAppProcess(path.join(import.meta.dirname, 'fixtures', 'body-rewrite-app.ts'), {
    env: { OXY_TEST_BODY_MODE: process.env.OXY_TEST_BODY_MODE ?? 'xor', NODE_OPTIONS: '--expose-gc' },
  });
});

after(async () => {
  // Either may be missing when `before` failed; the upstream left open would keep this file's
  // process alive (the runner then waits for it forever).
  await proxy?.stop();
  await up?.close();
});

/** The resident set of a process, in bytes, from /proc. */
function rss(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kb !== null, 'VmRSS in /proc/<pid>/status');
  return Number(kb[1]) * 1024;
}

/** GETs `n` streamed bytes through the proxy; checks each is the pattern XOR 0x20; returns the count. */
function fetchRewritten(n: number): Promise<{ bytes: number; te: string | undefined }> {
  const [host, port] = proxy.address().split(':');
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host, port: Number(port), path: `http://${up.authority}/stream?n=${n}`, agent: false },
      (res) => {
        let off = 0;
        let bad = -1;
        res.on('data', (c: Buffer) => {
          // Spot-check a few bytes of each chunk (checking all would cost this process more CPU).
          for (const i of [0, c.length >> 1, c.length - 1])
            if (bad < 0 && c[i] !== (patternByte(off + i) ^ XOR)) bad = off + i;
          off += c.length;
        });
        res.on('end', () => {
          if (bad >= 0) reject(new Error(`byte ${bad} not rewritten as expected`));
          else resolve({ bytes: off, te: res.headers['transfer-encoding'] });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

test('rewriting a 100 MiB streamed response grows the proxy RSS by less than 32 MiB', async (t) => {
  const pid = proxy.child.pid;
  assert.ok(pid !== undefined);
  // Warm up: code loaded, buffers and pools at their working size.
  assert.equal((await fetchRewritten(8 * MiB)).bytes, 8 * MiB);
  const baseline = rss(pid);
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rss(pid));
  }, 20);
  try {
    const got = await fetchRewritten(100 * MiB);
    assert.equal(got.bytes, 100 * MiB);
    if (XOR !== 0) assert.equal(got.te, 'chunked', 'a rewritten body is sent chunked');
  } finally {
    clearInterval(sampler);
  }
  peak = Math.max(peak, rss(pid));
  const growth = peak - baseline;
  t.diagnostic(
    `RSS baseline ${(baseline / MiB).toFixed(1)} MiB, peak growth ${(growth / MiB).toFixed(1)} MiB`,
  );
  assert.ok(
    growth < 32 * MiB,
    `RSS grew by ${(growth / MiB).toFixed(1)} MiB (baseline ${(baseline / MiB).toFixed(1)} MiB)`,
  );
});
