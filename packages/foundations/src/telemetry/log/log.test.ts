import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { TelemetryContext } from '../context.ts';
import { defaultTelemetrySettings, type LoggingSettings } from '../settings-types.ts';
import { captureTelemetry } from '../testing.ts';
import { log } from './index.ts';
import { configureLogging, flushLogs } from './logger.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fnd-log-'));
after(() => {
  configureLogging(defaultTelemetrySettings().logging);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function fileLogging(name: string, over: Partial<LoggingSettings>): string {
  const file = path.join(tmp, name);
  configureLogging({ ...defaultTelemetrySettings().logging, output: 'file', file, ...over }, 'svc');
  return file;
}

function readLines(file: string): string[] {
  flushLogs();
  return fs.readFileSync(file, 'utf8').trim().split('\n');
}

describe('forked logs', () => {
  it('inherit the parent fields and never leak theirs to the parent or siblings', async () => {
    const tele = captureTelemetry();
    after(() => tele.stop());
    const conn = TelemetryContext.current().withForkedLog().addFields({ conn_id: 7, proto: 'h1' });
    await conn.apply(async () => {
      log.info('connection open');
      // Interleaved: /a starts first and waits until /b has logged. (Two sleeps of different
      // lengths did this, and on a loaded CI machine the longer one once fired first.)
      let bServed!: () => void;
      const afterB = new Promise<void>((resolve) => {
        bServed = resolve;
      });
      const requests = ['/a', '/b'].map((url) =>
        TelemetryContext.current()
          .withForkedLog()
          .apply(async () => {
            TelemetryContext.current().addFields({ url });
            if (url === '/a') await afterB;
            else await sleep(5);
            log.info('request served');
            if (url === '/b') bServed();
          }),
      );
      await Promise.all(requests);
      log.info('connection closed');
    });
    log.info('outside');
    assert.deepEqual(
      tele.logs.map((r) => [r.msg, r.fields]),
      [
        ['connection open', { conn_id: 7, proto: 'h1' }],
        ['request served', { conn_id: 7, proto: 'h1', url: '/b' }],
        ['request served', { conn_id: 7, proto: 'h1', url: '/a' }],
        ['connection closed', { conn_id: 7, proto: 'h1' }],
        ['outside', {}],
      ],
    );
    assert.deepEqual(TelemetryContext.root().fields, {});
    tele.stop();
  });

  it('carry fields through callbacks, timers and sync apply', () => {
    const tele = captureTelemetry();
    const result = TelemetryContext.current()
      .withForkedLog()
      .addFields({ job: 'x' })
      .apply(() => {
        log.warn('sync', { extra: 1 });
        return 42;
      });
    assert.equal(result, 42);
    assert.deepEqual(tele.logs[0], { level: 'WARN', msg: 'sync', fields: { job: 'x', extra: 1 } });
    tele.stop();
  });
});

describe('field sources', () => {
  it('are asked only when a record is written, and the fork keeps the fields of its fork time', () => {
    const tele = captureTelemetry();
    let asked = 0;
    const source = {
      logFields() {
        asked++;
        return { conn_id: 'c-1', client: '[::1]:5' };
      },
    };
    const conn = TelemetryContext.current().fork('connection', source);
    const request = conn.fork('request', { logFields: () => ({ request_id: 'r-1' }) });
    conn.addFields({ later: true }); // after the fork: never reaches it
    request.apply(() => undefined);
    assert.equal(asked, 0, 'nothing written, nothing asked');
    request.apply(() => log.info('tunnel up', { extra: 1 }));
    conn.apply(() => log.info('conn'));
    assert.deepEqual(
      tele.logs.map((r) => [r.msg, r.fields]),
      [
        ['tunnel up', { conn_id: 'c-1', client: '[::1]:5', request_id: 'r-1', extra: 1 }],
        ['conn', { conn_id: 'c-1', client: '[::1]:5', later: true }],
      ],
    );
    assert.deepEqual(TelemetryContext.root().fields, {});
    tele.stop();
  });

  it('keep every field through many additions', () => {
    const ctx = TelemetryContext.current().fork('x', { logFields: () => ({ a: 0 }) });
    for (let i = 1; i <= 20; i++) ctx.addFields({ [`f${i}`]: i, a: i });
    const child = ctx.withForkedLog().addFieldSource({ logFields: () => ({ b: 1 }) });
    assert.equal(Object.keys(ctx.fields).length, 21);
    assert.equal(ctx.fields.a, 20);
    assert.deepEqual({ ...child.fields }, { ...ctx.fields, b: 1 });
  });
});

describe('log output', () => {
  it('writes JSON with the service name, level and structured fields', () => {
    const file = fileLogging('json.log', { format: 'json' });
    TelemetryContext.current()
      .withForkedLog()
      .addFields({ conn_id: 1 })
      .apply(() => log.error('boom', { code: 'E1' }));
    const rec = JSON.parse(readLines(file).at(-1) as string);
    assert.equal(rec.msg, 'boom');
    assert.equal(rec.level, 'ERROR');
    assert.equal(rec.service, 'svc');
    assert.equal(rec.conn_id, 1);
    assert.equal(rec.code, 'E1');
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT/);
  });

  it('writes text lines', () => {
    const file = fileLogging('text.log', { format: 'text' });
    log.info('hello there', { path: '/x', note: 'two words' });
    assert.match(readLines(file).at(-1) as string, /^\S+Z INFO {2}hello there path=\/x note="two words"$/);
  });

  it('drops records below the verbosity', () => {
    const file = fileLogging('verbosity.log', { format: 'json', verbosity: 'WARN' });
    log.debug('no');
    log.info('no');
    log.warn('yes');
    assert.deepEqual(
      readLines(file).map((l) => JSON.parse(l).msg),
      ['yes'],
    );
  });

  it('redacts the configured keys in context and record fields', () => {
    const file = fileLogging('redact.log', { format: 'json', redact_keys: ['token', 'password'] });
    TelemetryContext.current()
      .withForkedLog()
      .addFields({ token: 'secret-1', user: 'ann' })
      .apply(() => log.info('login', { password: 'hunter2' }));
    const rec = JSON.parse(readLines(file).at(-1) as string);
    assert.equal(rec.token, '[REDACTED]');
    assert.equal(rec.password, '[REDACTED]');
    assert.equal(rec.user, 'ann');
    assert.doesNotMatch(fs.readFileSync(file, 'utf8'), /secret-1|hunter2/);
  });

  it('rate-limits a flood and reports how many records were dropped', async () => {
    const file = fileLogging('rate.log', {
      format: 'json',
      rate_limit: { enabled: true, max_events_per_second: 50 },
    });
    await sleep(1010); // start a fresh one-second window
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) log.error('flood', { i });
    const floodMs = performance.now() - t0;
    await sleep(1010);
    log.info('after');
    const recs = readLines(file).map((l) => JSON.parse(l));
    assert.equal(recs.filter((r) => r.msg === 'flood').length, 50);
    const notice = recs.find((r) => r.dropped !== undefined);
    assert.equal(notice?.dropped, 100_000 - 50);
    assert.equal(recs.at(-1)?.msg, 'after');
    assert.ok(floodMs < 1000, `100k rate-limited records took ${floodMs} ms`);
  });
});

/** The top-level keys of a JSON line as written, repeats included (JSON.parse keeps the last). */
function writtenKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (depth === 1 && line[j + 1] === ':') keys.push(JSON.parse(line.slice(i, j + 1)) as string);
      i = j;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

describe('JSON lines', () => {
  /** Writes with `write` to a JSON file log and returns the last line's keys and values. */
  function lastLine(name: string, write: () => void): { keys: string[]; rec: Record<string, unknown> } {
    const file = fileLogging(name, { format: 'json' });
    write();
    const line = readLines(file).at(-1) as string;
    return { keys: writtenKeys(line), rec: JSON.parse(line) };
  }

  it('reads keys as written, repeats included', () => {
    assert.deepEqual(writtenKeys('{"a":1,"b":{"a":2,"c":[{"a":3}]},"s":"x\\"a\\":","a":4}'), [
      'a',
      'b',
      's',
      'a',
    ]);
  });

  it('write each key once: a record field over its scope, a fork over its parent, both over the process', () => {
    const { keys, rec } = lastLine('dupes.log', () =>
      TelemetryContext.current()
        .withForkedLog()
        .addFields({ conn_id: 1, request_id: 'r-1', service: 'scope' })
        .apply(() =>
          TelemetryContext.current()
            .withForkedLog()
            .addFields({ request_id: 'r-2' })
            .apply(() => log.info('request end', { request_id: 'r-3', pid: 42, status: 200 })),
        ),
    );
    assert.deepEqual(keys, ['level', 'time', 'service', 'pid', 'conn_id', 'request_id', 'status', 'msg']);
    assert.deepEqual(
      [rec.service, rec.pid, rec.conn_id, rec.request_id, rec.status],
      ['scope', 42, 1, 'r-3', 200],
    );
  });

  it('write the process pid once when a record names it too (the ready line)', () => {
    const { keys, rec } = lastLine('ready.log', () =>
      log.info('ready', { pid: process.pid, restarted: false }),
    );
    assert.deepEqual(keys, ['level', 'time', 'service', 'pid', 'restarted', 'msg']);
    assert.equal(rec.pid, process.pid);
  });

  it('keep a scope field that a record leaves undefined, and redact a record field that overrides one', () => {
    const file = fileLogging('undef.log', { format: 'json', redact_keys: ['token'] });
    TelemetryContext.current()
      .withForkedLog()
      .addFields({ err: 'scope error', token: 'a' })
      .apply(() => {
        log.warn('no override', { err: undefined, n: 1 });
        log.warn('override', { err: undefined, token: 'secret-2' });
      });
    const lines = readLines(file).slice(-2);
    for (const line of lines) {
      const keys = writtenKeys(line);
      assert.equal(new Set(keys).size, keys.length, line);
      assert.equal(JSON.parse(line).err, 'scope error');
      assert.equal(JSON.parse(line).token, '[REDACTED]');
    }
    assert.doesNotMatch(lines.join('\n'), /secret-2/);
  });
});

describe('text format', () => {
  it('shows an error as its message with the stack indented below', async () => {
    const { formatTextLine } = await import('./text-format.ts');
    const line = JSON.stringify({
      time: 't',
      level: 'ERROR',
      msg: 'failed',
      err: { type: 'Error', message: 'bad thing', stack: 'Error: bad thing\n    at x (y.ts:1:1)' },
      n: 1,
    });
    assert.equal(
      formatTextLine(line),
      't ERROR failed err="bad thing" n=1\n    Error: bad thing\n        at x (y.ts:1:1)\n',
    );
    assert.equal(formatTextLine('not json\n'), 'not json\n');
  });
});
