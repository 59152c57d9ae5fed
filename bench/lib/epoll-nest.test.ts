// What a sender pays per event when the receiver's epoll set is nested in another
// (bench/tools/epoll-nest.c; bench/analysis-l4.md, "what the client and the upstream spend
// behind each proxy").
// Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/epoll-nest.test.ts
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lastJson, runCommand } from './procs.ts';
import { buildTool } from './setup.ts';

const ROOT = join(import.meta.dirname, '../..');

describe('epoll-nest', () => {
  const work = mkdtempSync(join(tmpdir(), 'epoll-nest-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  it('times one-byte writes into a flat and a nested set', async () => {
    const bin = await buildTool(ROOT, work, 'epoll-nest');
    const r = await runCommand(bin, ['2000', '3']);
    assert.equal(r.code, 0, r.stderr);
    const j = lastJson(r.stdout);
    assert.equal(j.writes, 2000);
    assert.equal(j.rounds, 3);
    for (const k of ['flat_us', 'nested_us']) {
      const us = Number(j[k]);
      assert.ok(Number.isFinite(us) && us > 0 && us < 10_000, `${k} ${us}`);
    }
  });

  it('refuses arguments it cannot use, with its usage', async () => {
    const bin = await buildTool(ROOT, work, 'epoll-nest');
    for (const args of [['10'], ['2000', '0'], ['2000', '101']]) {
      const r = await runCommand(bin, args);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, /usage: epoll-nest/);
    }
  });
});
