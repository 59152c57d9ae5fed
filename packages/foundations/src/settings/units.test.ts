import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDuration, formatSize, parseDuration, parseSize } from './units.ts';

test('parseDuration accepts units and compounds, largest first', () => {
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('1m'), 60_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2d'), 172_800_000);
  assert.equal(parseDuration('0s'), 0);
});

test('parseDuration refuses malformed input', () => {
  for (const bad of ['', '10', 's', '10x', '1s1h', '1s1s', '-1s', '1 s', 's10', '10sm', '1e3s', '.5s']) {
    assert.equal(parseDuration(bad), undefined, bad);
  }
});

test('formatDuration is the inverse of parseDuration', () => {
  for (const [ms, text] of [
    [0, '0s'],
    [250, '250ms'],
    [10_000, '10s'],
    [90_000, '1m30s'],
    [3_600_000, '1h'],
    [86_400_250, '1d250ms'],
  ] as const) {
    assert.equal(formatDuration(ms), text);
    assert.equal(parseDuration(text), ms);
  }
  assert.throws(() => formatDuration(-1), RangeError);
});

test('parseSize: binary and decimal units, plain bytes', () => {
  assert.equal(parseSize('16KiB'), 16_384);
  assert.equal(parseSize('1MiB'), 1_048_576);
  assert.equal(parseSize('1.5KiB'), 1536);
  assert.equal(parseSize('10MB'), 10_000_000);
  assert.equal(parseSize('2kB'), 2000);
  assert.equal(parseSize('512B'), 512);
  assert.equal(parseSize('1024'), 1024);
  assert.equal(parseSize(1024), 1024);
  assert.equal(parseSize('1 GiB'), 1024 ** 3);
});

test('parseSize refuses malformed input', () => {
  for (const bad of ['', 'KiB', '16kib', '16XB', '-1', '1.3B', '0.1KiB', 'ten', '1e3']) {
    assert.equal(parseSize(bad), undefined, bad);
  }
  for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) assert.equal(parseSize(bad), undefined);
});

test('formatSize picks the largest exact binary unit', () => {
  assert.equal(formatSize(16_384), '16KiB');
  assert.equal(formatSize(1_048_576), '1MiB');
  assert.equal(formatSize(1000), '1000B');
  assert.equal(formatSize(0), '0B');
});
