import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sweepInterval } from './lean.ts';

test('the timeout sweep runs at half the shorter timeout, between 100 ms and 1 s', () => {
  assert.equal(sweepInterval(10_000, 60_000), 1000);
  assert.equal(sweepInterval(10_000, 1_200), 600);
  assert.equal(sweepInterval(300, 60_000), 150);
  assert.equal(sweepInterval(50, 60_000), 100);
  assert.equal(sweepInterval(0, 400), 200, 'an off header timeout does not count');
  assert.equal(sweepInterval(0, 0), 1000);
});
