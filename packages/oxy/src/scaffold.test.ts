/**
 * `oxy new` refuses, with one message and nothing written, a name npm would refuse, a directory
 * that exists, and a place nothing can be written (under /proc, where Node's recursive
 * mkdirSync would spin forever); and writes the starter where it can.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { scaffold } from './scaffold.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-scaffold-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const opts = (target: string) => ({ dir: target, version: '0.1.0' });

test('refuses a bad name, an existing directory and a virtual file system', () => {
  assert.throws(() => scaffold(opts(path.join(dir, 'Bad Name'))), /"Bad Name" is not a valid package name/);
  fs.mkdirSync(path.join(dir, 'taken'));
  assert.throws(() => scaffold(opts(path.join(dir, 'taken'))), /already exists/);
  assert.throws(
    () => scaffold(opts('/proc/oxy-new-app')),
    /oxy new: \/proc\/oxy-new-app\/package\.json is under \/proc, a virtual file system/,
  );
});

test('writes the starter app into a new directory', () => {
  const files = scaffold(opts(path.join(dir, 'my-proxy')));
  assert.ok(files.includes('app.ts') && files.includes('oxy.yaml'));
  assert.ok(fs.existsSync(path.join(dir, 'my-proxy', 'package.json')));
});
