/**
 * The audit file writer under write errors (issue 19): a full file system is played by this
 * process's own RLIMIT_FSIZE (lowered with prlimit(1): a write crossing it is cut short, the
 * next one fails with EFBIG, exactly as a disk filling up mid-line), then raised again. Also
 * `logrotate`-style renames and SIGHUP. Each line in the file must always be a whole record.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { type AuditRecord, type AuditSink, openAudit } from '../src/audit.ts';
import { captureTelemetry, waitUntil } from '../src/testing/index.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-audit-'));
after(() => {
  setFileSizeLimit('unlimited');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Sets this process's soft RLIMIT_FSIZE (the hard limit stays as it is). */
function setFileSizeLimit(bytes: number | 'unlimited'): void {
  const hard = execFileSync('prlimit', [
    '--pid',
    String(process.pid),
    '--fsize',
    '--noheadings',
    '--output=HARD',
  ])
    .toString()
    .trim();
  execFileSync('prlimit', [
    '--pid',
    String(process.pid),
    `--fsize=${bytes}:${hard === 'unlimited' ? 'unlimited' : hard}`,
  ]);
}

function record(i: number): AuditRecord {
  return {
    kind: 'request',
    conn_id: `c${i}`,
    request_id: `r${i}`,
    endpoint: 'main',
    peer: '127.0.0.1:1',
    client_identity: null,
    client: '127.0.0.1:1',
    target: 'example.test:80',
    upstream: null,
    decisions: ['egress:direct'],
    status: 200,
    bytes_up: 0,
    bytes_down: i,
    duration_ms: 1,
    close_reason: 'done',
  };
}

/** The records in `file`; throws on a line that is not a whole record. */
function lines(file: string): AuditRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    // Boundary: not created yet.
    return [];
  }
  return records(text);
}

/** The records in a file's `text`; throws on a line that is not a whole record. */
function records(text: string): AuditRecord[] {
  if (text.length > 0) assert.equal(text.at(-1), '\n', 'the file ends with a whole line');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AuditRecord);
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  const end = performance.now() + 3000;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function sink(file: string, maxBuffer = 1024 * 1024): AuditSink {
  return openAudit({ output: 'file', path: file, max_buffer: maxBuffer, retry_interval: 50 });
}

test('a full disk holds records, never leaves a partial line, and writing resumes once space is back', async () => {
  const tele = captureTelemetry();
  after(() => tele.stop());
  const file = path.join(dir, 'full.log');
  const audit = sink(file);
  after(() => audit.close());
  for (let i = 0; i < 3; i++) audit.write(record(i));
  await waitUntil(() => lines(file).length === 3, 'the first records');
  const size = fs.statSync(file).size;
  // Room for part of one more line only.
  setFileSizeLimit(size + 40);
  for (let i = 3; i < 10; i++) audit.write(record(i));
  await waitUntil(
    () => tele.logs.some((r) => r.msg.startsWith('audit log write failed')),
    'the write error to be logged',
  );
  // A few retries (every 50 ms), all failing, each one counted.
  await waitFor(
    async () => ((await tele.metricValue('audit_write_errors_total')) ?? 0) >= 3,
    'a few failing retries',
  );
  // Each retry cuts a line short again and then truncates it off: between the two the cut line
  // is in the file, for as long as a loaded machine takes to run the write's callback. So wait
  // for a moment between retries, and check that moment's file, read once.
  let between = Buffer.alloc(0);
  await waitUntil(() => {
    between = fs.readFileSync(file);
    return between.length <= size;
  }, 'the cut line to be removed');
  assert.equal(between.length, size, 'the cut line was removed, the whole lines kept');
  assert.equal(records(between.toString('utf8')).length, 3);
  setFileSizeLimit('unlimited');
  // A retry already cut short before the limit rose may still be truncating its line: skip that moment.
  await waitUntil(() => {
    const text = fs.readFileSync(file, 'utf8');
    return text.endsWith('\n') && records(text).length === 10;
  }, 'the held records to be written');
  assert.deepEqual(
    lines(file).map((r) => r.request_id),
    Array.from({ length: 10 }, (_, i) => `r${i}`),
    'every record, once, in order',
  );
  await waitUntil(() => tele.logs.some((r) => r.msg === 'audit log writing again'), 'the recovery log');
});

test('past audit.max_buffer records are dropped and counted, the rest written after recovery', async () => {
  const tele = captureTelemetry();
  after(() => tele.stop());
  const file = path.join(dir, 'overflow.log');
  const one = `${JSON.stringify(record(0))}\n`.length;
  const audit = sink(file, one * 5 + 10);
  after(() => audit.close());
  audit.write(record(0));
  await waitUntil(() => lines(file).length === 1, 'the first record');
  setFileSizeLimit(fs.statSync(file).size);
  for (let i = 1; i <= 20; i++) audit.write(record(i));
  await waitFor(async () => ((await tele.metricValue('audit_records_dropped_total')) ?? 0) > 0, 'a drop');
  setFileSizeLimit('unlimited');
  // Every record is either written or counted as dropped.
  let seen = '';
  await waitFor(async () => {
    const dropped = (await tele.metricValue('audit_records_dropped_total')) ?? 0;
    seen = `${lines(file).length} written, ${dropped} dropped`;
    return lines(file).length + dropped === 21;
  }, 'the held records').catch((e: Error) => assert.fail(`${e.message}: ${seen}`));
  assert.ok(lines(file).length >= 5, 'the held records were written');
  const dropped = (await tele.metricValue('audit_records_dropped_total')) ?? 0;
  assert.ok(dropped >= 14, `dropped ${dropped}`);
});

test('a rename (logrotate) and SIGHUP each make the writer reopen audit.path', async () => {
  const file = path.join(dir, 'rotate.log');
  const audit = sink(file);
  after(() => audit.close());
  audit.write(record(1));
  await waitUntil(() => lines(file).length === 1, 'the first record');
  fs.renameSync(file, `${file}.1`);
  // Within the check interval, the writer notices that the path names no file (or another).
  await waitUntil(() => fs.existsSync(file), 'the file to be created again');
  audit.write(record(2));
  await waitUntil(() => lines(file).length === 1, 'the record in the new file');
  assert.equal(lines(`${file}.1`).length, 1);

  // SIGHUP: the new file is used at once, before the next check would notice (a long interval).
  const slow = openAudit({
    output: 'file',
    path: path.join(dir, 'hup.log'),
    max_buffer: 1 << 20,
    retry_interval: 3_600_000,
  });
  after(() => slow.close());
  const hup = path.join(dir, 'hup.log');
  slow.write(record(3));
  await waitUntil(() => lines(hup).length === 1, 'the first record');
  fs.renameSync(hup, `${hup}.1`);
  process.kill(process.pid, 'SIGHUP');
  await waitUntil(() => fs.existsSync(hup), 'the file reopened on SIGHUP');
  slow.write(record(4));
  await waitUntil(() => lines(hup).length === 1, 'the record in the new file');
  assert.equal(lines(`${hup}.1`).length, 1);
});
