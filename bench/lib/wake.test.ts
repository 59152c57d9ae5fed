// Where the kernel puts a woken task: the probe (bench/tools/wake-placement.c) and the phrase the
// results' machine line takes from it. Run on demand (bench is not in `npm test`):
//   npx node --test bench/lib/wake.test.ts
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildTool } from './setup.ts';
import { describePlacement, wakePlacement } from './wake.ts';

const ROOT = join(import.meta.dirname, '../..');

describe('describePlacement', () => {
  const duty = [0.3, 0.5, 0.7, 0.9];

  it('names the busy share where woken tasks stop joining the waker', () => {
    const text = describePlacement({ duty, onWakerCpu: [0.99, 0.97, 0.01, 0], vcpuPack: '15' });
    assert.equal(
      text,
      "a woken task joins its waker's CPU while that is under 70 % busy (kernel sched_vcpu_pack=15)",
    );
  });

  it('says when they never or always join', () => {
    assert.equal(
      describePlacement({ duty, onWakerCpu: [0.1, 0, 0, 0], vcpuPack: null }),
      "a woken task does not join its waker's busy CPU",
    );
    assert.equal(
      describePlacement({ duty, onWakerCpu: [1, 1, 0.9, 0.8], vcpuPack: null }),
      "a woken task joins its waker's CPU however busy (up to 90 %)",
    );
    assert.equal(
      describePlacement({ duty: [], onWakerCpu: [], vcpuPack: null }),
      'wake-up placement not measured',
    );
    assert.equal(
      describePlacement({ duty, onWakerCpu: [1, -1, 0, 0], vcpuPack: null }),
      'wake-up placement not measured',
    );
  });
});

describe('wake-placement', () => {
  const work = mkdtempSync(join(tmpdir(), 'wake-placement-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  it('measures a share of wake-ups for each duty asked', async () => {
    const bin = await buildTool(ROOT, work, 'wake-placement');
    const p = await wakePlacement(bin, [0.2, 0.9]);
    assert.deepEqual(p.duty, [0.2, 0.9]);
    assert.equal(p.onWakerCpu.length, 2);
    for (const share of p.onWakerCpu) assert.ok(share >= 0 && share <= 1, `share ${share}`);
  });
});
