/**
 * `reactorMode`: makes this thread's reactor in the mode asked unless it has one (or OXY_REACTOR
 * chooses), answers the mode in use, and refuses anything but 'thread' and 'inline' by name. A
 * test file runs in a process of its own, so the reactor is made here first.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reactorMode } from 'native';

test('reactorMode refuses a mode it does not know, naming the two it takes', () => {
  assert.throws(() => reactorMode('spin' as 'thread'), {
    name: 'TypeError',
    message: "reactorMode: mode must be 'inline' or 'thread'",
  });
  assert.throws(() => reactorMode(42 as unknown as 'thread'), { name: 'TypeError' });
});

test('the first call makes the reactor in the mode asked; later calls answer the mode in use', () => {
  const env = process.env.OXY_REACTOR;
  const first = reactorMode('inline');
  assert.equal(first, env === 'thread' ? 'thread' : 'inline');
  assert.equal(reactorMode('thread'), first, 'a reactor keeps the mode it was made in');
});
