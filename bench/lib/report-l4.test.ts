// The layer-4 page: targets judged against the better peer (S6) and 1.5× nginx (S7), and only
// S6/S7 on it. Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/report-l4.test.ts
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Scenario } from './proxies.ts';
import type { ResultLine } from './report.ts';
import { l4Page } from './report-l4.ts';

function line(scenario: Scenario, proxy: string, primary: number): ResultLine {
  return {
    scenario,
    proxy,
    run: 1,
    status: 'ok',
    foreign_cpu: 0,
    busy: false,
    time: '2026-01-01T00:00:00Z',
    figures: { primary, load1: 1.5 },
  };
}

const INFO = {
  machine: 'test',
  versions: { oxy: '0' },
  date: 'now',
  command: 'npm run bench -- S6,S7',
  notes: [],
};

describe('l4Page', () => {
  it('judges S6 against the better of two peers and S7 against 1.5× nginx', () => {
    const md = l4Page(
      [
        line('S6b', 'oxy', 9000),
        line('S6b', 'haproxy-tcp', 10000),
        line('S6b', 'nginx-stream', 8000),
        line('S7a', 'oxy', 150),
        line('S7a', 'nginx-stream', 100),
        line('S7c', 'oxy', 149),
        line('S7c', 'nginx-stream', 100),
      ],
      INFO,
      ['oxy', 'haproxy-tcp', 'nginx-stream'],
    );
    assert.match(md, /\| S6b \| .* \| haproxy-tcp 10,000 \| 0\.90× \| – \| \*\*no\*\* \|/);
    assert.match(md, /\| S7a \| .* \| nginx-stream 100\.00 \| 1\.50× \| – \| yes \|/);
    assert.match(md, /\| S7c \| .* \| nginx-stream 100\.00 \| 1\.49× \| – \| \*\*no\*\* \|/);
    assert.doesNotMatch(md, /## S1/);
    assert.match(md, /\[benchmarks\.md\]\(benchmarks\.md\)/);
  });

  it('shows S6b side by side in a section of its own, kept out of the sequential cells', () => {
    const beside = (proxy: string, other: string, primary: number): ResultLine => ({
      ...line('S6b', proxy, primary),
      beside: other,
    });
    const md = l4Page(
      [
        line('S6b', 'oxy', 9000),
        line('S6b', 'haproxy-tcp', 10000),
        beside('oxy', 'haproxy-tcp', 5500),
        beside('haproxy-tcp', 'oxy', 5000),
      ],
      INFO,
      ['oxy', 'haproxy-tcp'],
    );
    // The targets table is the sequential runs' (a side-by-side 5,500 would make the median 7,250).
    assert.match(md, /\| S6b \| .* \| haproxy-tcp 10,000 \| 0\.90× \| – \| \*\*no\*\* \|/);
    assert.match(md, /## S6b side by side/);
    assert.match(md, /\| S6b \| oxy beside haproxy-tcp \| 5,500 \| 5,000 \| 1\.10× \(1\.10–1\.10\) \|/);
  });
});
