/** The new process's command line: the restarter's config files replace the instance's own `-c` options. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configFilesOf, withConfigFiles } from './spawn-next.ts';

test('every -c/--config form is replaced by the files given, other options keep their places', () => {
  const args = [
    'app.ts',
    '-c',
    'a.yaml',
    '--verbose',
    '--config=b.yaml',
    '-cc.yaml',
    '--config',
    'd.yaml',
    '-w',
    '2',
  ];
  assert.deepEqual(configFilesOf(args), ['a.yaml', 'b.yaml', 'c.yaml', 'd.yaml']);
  assert.deepEqual(withConfigFiles(args, ['/etc/x.yaml', '/etc/y.yaml']), [
    'app.ts',
    '--verbose',
    '-w',
    '2',
    '-c',
    '/etc/x.yaml',
    '-c',
    '/etc/y.yaml',
  ]);
});

test('no files given keeps the command line; an empty list means the defaults', () => {
  const args = ['app.ts', '-c', 'a.yaml'];
  assert.deepEqual(withConfigFiles(args, undefined), args);
  assert.deepEqual(withConfigFiles(args, []), ['app.ts']);
  assert.deepEqual(configFilesOf(['app.ts']), []);
});

test('options after "--" are left alone', () => {
  assert.deepEqual(withConfigFiles(['app.ts', '-c', 'a', '--', '-c', 'z'], ['/b']), [
    'app.ts',
    '-c',
    '/b',
    '--',
    '-c',
    'z',
  ]);
  assert.deepEqual(configFilesOf(['app.ts', '-c', 'a', '--', '-c', 'z']), ['a']);
});
