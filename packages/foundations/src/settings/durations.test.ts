/**
 * `s.duration` bounds: every duration stops at the longest Node.js timer (Node fires a longer
 * one after 1 ms), and a field may set a tighter range of its own.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_TIMER_MS, parseSettings, SettingsError, s } from './index.ts';

const Settings = s.object('Durations.', {
  timeout: s.duration('A timeout; 0s means no limit.', '10s'),
  deadline: s.duration('A deadline that must exist.', '5s', { min: '1ms' }),
  interval: s.duration('An interval.', '1s', { min: '10ms', max: '1h' }),
});

function parse(value: unknown) {
  return parseSettings(Settings, [{ source: 'f.yaml', value }]);
}

function messageOf(value: unknown): string {
  try {
    parse(value);
  } catch (e) {
    assert.ok(e instanceof SettingsError, String(e));
    return e.message;
  }
  assert.fail(`${JSON.stringify(value)} was accepted`);
}

test('MAX_TIMER_MS is the longest delay a Node.js timer takes', () => {
  assert.equal(MAX_TIMER_MS, 2_147_483_647);
  // One more and Node warns (TimeoutOverflowWarning) and fires after 1 ms.
  const warned: string[] = [];
  const onWarning = (w: Error) => warned.push(w.name);
  process.on('warning', onWarning);
  clearTimeout(setTimeout(() => undefined, MAX_TIMER_MS));
  clearTimeout(setTimeout(() => undefined, MAX_TIMER_MS + 1));
  return new Promise<void>((resolve) =>
    setImmediate(() => {
      process.off('warning', onWarning);
      assert.deepEqual(warned, ['TimeoutOverflowWarning']);
      resolve();
    }),
  );
});

test('a duration longer than the longest timer is refused, naming the key and the file', () => {
  assert.equal(parse({ timeout: '24d20h31m23s647ms' }).timeout, MAX_TIMER_MS);
  for (const text of ['24d20h31m23s648ms', '25d', '30d', '100d']) {
    assert.equal(
      messageOf({ timeout: text }),
      `timeout: expected a duration like "10s" or "250ms", got "${text}" ` +
        '(longer than 24d20h31m23s647ms, the longest Node.js timer) (in f.yaml)',
    );
  }
});

test('a field can set its own minimum and maximum', () => {
  assert.equal(parse({ timeout: '0s' }).timeout, 0);
  assert.equal(parse({ deadline: '1ms' }).deadline, 1);
  assert.equal(
    messageOf({ deadline: '0s' }).split(' (in')[0],
    'deadline: expected a duration like "10s" or "250ms", got "0s" (shorter than 1ms)',
  );
  assert.match(messageOf({ interval: '5ms' }), /^interval: .*got "5ms" \(shorter than 10ms\)/);
  assert.match(messageOf({ interval: '2h' }), /^interval: .*got "2h" \(longer than 1h\) \(in f\.yaml\)$/);
  assert.equal(parse({ interval: '1h' }).interval, 3_600_000);
});

test('a bad range or a default outside it throws when the field is defined', () => {
  assert.throws(
    () => s.duration('Too long.', '1s', { max: '30d' }),
    /max "30d" of "Too long." is not a duration of at most 24d20h31m23s647ms/,
  );
  assert.throws(() => s.duration('Bad min.', '1s', { min: '1' }), /min "1" of "Bad min." is not a duration/);
  assert.throws(() => s.duration('Upside down.', '1s', { min: '2s', max: '1s' }), /min above max/);
  assert.throws(
    () => s.duration('No limit.', '0s', { min: '1ms' }),
    /default "0s" of "No limit." is invalid/,
  );
  assert.throws(() => s.duration('Forever.', '25d'), /default "25d" of "Forever." is invalid/);
});
