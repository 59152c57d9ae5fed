import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ResultLine } from './report.ts';
import { pairTable, summarisePairs } from './side-by-side.ts';

const line = (
  proxy: string,
  beside: string,
  run: number,
  rate: number,
  cpu: number,
  ok = true,
): ResultLine => ({
  scenario: 'S6b',
  proxy,
  beside,
  run,
  time: '2026-12-07T08:00:00.000Z',
  status: ok ? 'ok' : 'error',
  foreign_cpu: 0,
  busy: false,
  ...(ok ? { figures: { primary: rate, conns_per_s: rate, cpu_us_per_conn: cpu } } : { error: 'x' }),
});

test('summarisePairs: per-run ratios of the subject over each peer, medians, and only runs with both sides', () => {
  const lines = [
    line('oxy', 'haproxy-tcp', 1, 1100, 60),
    line('haproxy-tcp', 'oxy', 1, 1000, 70),
    line('oxy', 'haproxy-tcp', 2, 1200, 62),
    line('haproxy-tcp', 'oxy', 2, 1000, 72),
    line('oxy', 'haproxy-tcp', 3, 900, 64),
    line('haproxy-tcp', 'oxy', 3, 1000, 74),
    // Run 4: the peer failed, so the pair's run does not count.
    line('oxy', 'haproxy-tcp', 4, 5000, 10),
    line('haproxy-tcp', 'oxy', 4, 0, 0, false),
    line('oxy', 'nginx-stream', 1, 800, 61),
    line('nginx-stream', 'oxy', 1, 1000, 80),
  ];
  const rows = summarisePairs(lines, 'oxy');
  assert.equal(rows.length, 2);
  const h = rows.find((r) => r.peer === 'haproxy-tcp')!;
  assert.equal(h.runs, 3);
  assert.equal(h.subjectRate, 1100);
  assert.equal(h.peerRate, 1000);
  assert.equal(h.ratio, 1.1);
  assert.equal(h.low, 0.9);
  assert.equal(h.high, 1.2);
  assert.equal(h.subjectCpu, 62);
  assert.equal(h.peerCpu, 72);
  const n = rows.find((r) => r.peer === 'nginx-stream')!;
  assert.equal(n.ratio, 0.8);
  assert.equal(n.runs, 1);
});

test('summarisePairs ignores sequential lines (no `beside`) and the subject against itself', () => {
  const seq: ResultLine = { ...line('haproxy-tcp', 'x', 1, 1000, 70) };
  delete seq.beside;
  assert.deepEqual(summarisePairs([seq, line('oxy', 'haproxy-tcp', 1, 1100, 60)], 'oxy'), []);
});

test('pairTable: one row per pair with the ratio and its range', () => {
  const rows = summarisePairs(
    [line('oxy', 'haproxy-tcp', 1, 6774, 63.4), line('haproxy-tcp', 'oxy', 1, 5985, 73.7)],
    'oxy',
  );
  const t = pairTable(rows);
  assert.match(
    t,
    /\| S6b \| oxy beside haproxy-tcp \| 6,774 \| 5,985 \| 1\.13× \(1\.13–1\.13\) \| 63\.4 \/ 73\.7 \| 1 \|/,
  );
  assert.equal(t.split('\n').length, 3);
});
