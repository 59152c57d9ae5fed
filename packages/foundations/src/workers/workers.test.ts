/**
 * The pieces of `foundations/workers` that need no process: the worker variable's parser
 * (malformed values are errors naming the field), the state mapping between single processes
 * and workers, and the supervisor's `/metrics` rendering (one family, one `worker` label each).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { renderWorkerMetrics } from './metrics.ts';
import { parseWorkerEnv, WORKER_ENV } from './role.ts';
import { workerCount } from './settings.ts';
import { packWorkerStates, workerState } from './state.ts';

const env = (value: string): NodeJS.ProcessEnv => ({ [WORKER_ENV]: value });

describe('parseWorkerEnv', () => {
  it('reads a well-formed role', () => {
    const role = parseWorkerEnv(
      env(
        JSON.stringify({
          index: 1,
          count: 2,
          listeners: [
            { name: 'main', addr: { kind: 'tcp', host: '127.0.0.1', port: 80 }, fd: 4 },
            { name: 'sd', addr: { kind: 'tcp', host: '127.0.0.1', port: 81 }, fd: 5, systemd: true },
          ],
        }),
      ),
    );
    assert.deepEqual(role, {
      index: 1,
      count: 2,
      listeners: [
        { fd: 4, name: 'main', addr: { kind: 'tcp', host: '127.0.0.1', port: 80 }, source: 'handover' },
        // so the worker's listen() does not lower the unit's backlog
        { fd: 5, name: 'sd', addr: { kind: 'tcp', host: '127.0.0.1', port: 81 }, source: 'systemd' },
      ],
    });
    assert.equal(parseWorkerEnv({}), null);
  });

  it('rejects malformed values naming the field', () => {
    const bad: [string, RegExp][] = [
      ['{', /not valid JSON/],
      ['[]', /expected an object/],
      ['{"index":0,"count":0,"listeners":[]}', /count/],
      ['{"index":2,"count":2,"listeners":[]}', /index: expected an integer from 0 to 1/],
      ['{"index":0,"count":1}', /listeners: expected a list/],
      ['{"index":0,"count":1,"listeners":[3]}', /listeners\[0\]: expected an object/],
      ['{"index":0,"count":1,"listeners":[{"name":"m","fd":1,"addr":{}}]}', /listeners\[0\]\.fd/],
      ['{"index":0,"count":1,"listeners":[{"fd":4}]}', /listeners\[0\]\.name/],
      ['{"index":0,"count":1,"listeners":[{"name":"m","fd":4,"addr":{"kind":"x"}}]}', /listeners\[0\]\.addr/],
      [
        '{"index":0,"count":1,"listeners":[{"name":"m","fd":4,"addr":{"kind":"unix","path":"/s"},"systemd":1}]}',
        /listeners\[0\]\.systemd/,
      ],
    ];
    for (const [value, message] of bad) {
      assert.throws(
        () => parseWorkerEnv(env(value)),
        (e: Error & { code?: string }) =>
          e.code === 'FND_ERR_WORKERS' && message.test(e.message) && e.message.includes(WORKER_ENV),
        value,
      );
    }
  });
});

describe('state mapping', () => {
  it('gives worker i the old worker i state, a single process as worker 0', () => {
    const packed = packWorkerStates([{ a: 0 }, { a: 1 }]);
    assert.deepEqual(workerState(packed, 1), { a: 1 });
    assert.equal(workerState(packed, 2), null, 'more workers than before: no state');
    assert.deepEqual(workerState({ a: 9 }, 0), { a: 9 }, 'from a single process');
    assert.equal(workerState({ a: 9 }, 1), null);
    assert.equal(workerState(undefined, 0), null);
  });

  it('resolves 0 to the number of cores', () => {
    assert.ok(workerCount(0) >= 1);
    assert.equal(workerCount(3), 3);
  });
});

describe('renderWorkerMetrics', () => {
  it('merges each family once with a worker label on every sample', async () => {
    const json = async (value: number) => {
      const r = new Registry();
      const { Counter, Histogram } = await import('prom-client');
      new Counter({ name: 'x_total', help: 'X.', labelNames: ['e'], registers: [r] }).inc({ e: 'm' }, value);
      new Histogram({ name: 'h', help: 'H.', buckets: [1], registers: [r] }).observe(value);
      return r.getMetricsAsJSON();
    };
    const text = await renderWorkerMetrics([
      { worker: '0', metrics: await json(2) },
      { worker: '1', metrics: await json(3) },
      { worker: 'bad', metrics: 'not metrics' },
    ]);
    assert.equal(text.match(/^# TYPE x_total counter$/gm)?.length, 1);
    assert.match(text, /^x_total\{e="m",worker="0"\} 2$/m);
    assert.match(text, /^x_total\{e="m",worker="1"\} 3$/m);
    assert.match(text, /^h_count\{worker="1"\} 1$/m);
    assert.equal(text.match(/^# TYPE h histogram$/gm)?.length, 1);
  });
});
