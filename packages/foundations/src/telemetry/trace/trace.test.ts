import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { TelemetryContext } from '../context.ts';
import { log } from '../log/index.ts';
import { defaultTelemetrySettings } from '../settings-types.ts';
import { type CapturedSpan, captureTelemetry } from '../testing.ts';
import { continueTrace, currentTraceparent, spanFn, startSpan } from './index.ts';
import { configureTracing, flushTracing, parseTraceparent, shutdownTracing } from './tracer.ts';

function names(spans: CapturedSpan[]): unknown[] {
  return spans.map((s) => (s.children.length === 0 ? s.name : [s.name, names(s.children)]));
}

describe('spans', () => {
  it('spanFn nests spans along the async call stack, as a tree', async () => {
    const tele = captureTelemetry();
    after(() => tele.stop());
    const query = spanFn('db query', async (sql: string) => {
      await sleep(2);
      return sql.length;
    });
    const respond = spanFn('respond', async () => {
      const n = await query('select 1');
      await spanFn('render', () => n * 2)();
      return n;
    });
    assert.equal(await respond(), 8);
    const roots = tele.spans();
    assert.deepEqual(names(roots), [['respond', ['db query', 'render']]]);
    const [root] = roots;
    assert.equal(root?.children[0]?.traceId, root?.traceId);
    assert.ok((root?.durationMs ?? 0) >= 2);
    tele.stop();
  });

  it('marks a span failed when the function throws or rejects', async () => {
    const tele = captureTelemetry();
    const fail = spanFn('fails', async () => {
      throw new Error('nope');
    });
    await assert.rejects(fail(), /nope/);
    assert.throws(
      () =>
        spanFn('sync fails', () => {
          throw new Error('sync nope');
        })(),
      /sync nope/,
    );
    assert.deepEqual(
      tele.spans().map((s) => [s.name, s.status]),
      [
        ['fails', 'error'],
        ['sync fails', 'error'],
      ],
    );
    tele.stop();
  });

  it('startSpan gives an explicit span that code can run in', () => {
    const tele = captureTelemetry();
    const s = startSpan('explicit', { kind: 'manual' });
    s.context.apply(() => spanFn('inside', () => undefined)());
    s.setAttributes({ rows: 3 });
    s.end();
    s.end();
    const [root] = tele.spans();
    assert.equal(root?.name, 'explicit');
    assert.deepEqual(root?.attributes, { kind: 'manual', rows: 3 });
    assert.equal(root?.children[0]?.name, 'inside');
    tele.stop();
  });
});

describe('logs and traces', () => {
  it('a record written in a sampled trace carries its trace id; elsewhere none', () => {
    const tele = captureTelemetry();
    spanFn('traced', () => log.info('inside'))();
    log.info('outside');
    TelemetryContext.current()
      .withForkedTrace('unsampled', { sampled: false })
      .apply(() => log.info('unsampled'));
    const [inside, outside, unsampled] = tele.logs;
    assert.equal(inside?.traceId, tele.spans()[0]?.traceId);
    assert.equal(outside?.traceId, undefined);
    assert.equal(unsampled?.traceId, undefined);
    tele.stop();
  });
});

describe('sampling', () => {
  it('allocates no span when the ratio is 0, yet still propagates "not sampled"', () => {
    const tele = captureTelemetry({ samplingRatio: 0 });
    let tp: string | undefined;
    TelemetryContext.current()
      .withForkedTrace('request')
      .apply(() => {
        spanFn('a', () => spanFn('b', () => undefined)())();
        assert.equal(TelemetryContext.current().span, null);
        tp = currentTraceparent();
      });
    assert.equal(tele.startedSpans(), 0);
    assert.match(tp ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    tele.stop();
  });

  it('can be overridden for one code branch', () => {
    const tele = captureTelemetry({ samplingRatio: 0 });
    const handle = (account: string) => {
      let ctx = TelemetryContext.current();
      if (account === 'debug-me') ctx = ctx.withSamplingRatio(1);
      return ctx.withForkedTrace('request', {}).apply(() => spanFn('work', () => account)());
    };
    for (const a of ['a', 'b', 'debug-me', 'c']) handle(a);
    assert.deepEqual(names(tele.spans()), [['request', ['work']]]);
    // The override does not leak out of its branch.
    handle('d');
    assert.equal(tele.spans().length, 1);
    tele.stop();
  });

  it('samples roughly the configured fraction of new traces', () => {
    const tele = captureTelemetry({ samplingRatio: 0.25 });
    for (let i = 0; i < 2000; i++) spanFn('root', () => undefined)();
    const n = tele.spans().length;
    assert.ok(n > 350 && n < 650, `sampled ${n} of 2000 at 0.25`);
    tele.stop();
  });
});

describe('stitching', () => {
  const upstream = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

  it('continues a sampled incoming trace and produces a traceparent for the next hop', () => {
    const tele = captureTelemetry({ samplingRatio: 0 }); // upstream decides, not the local ratio
    const outgoing = continueTrace(upstream, 'handle', () =>
      spanFn('call backend', () => currentTraceparent())(),
    );
    const [root] = tele.spans();
    assert.equal(root?.name, 'handle');
    assert.equal(root?.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(root?.parentSpanId, 'b7ad6b7169203331');
    const child = root?.children[0];
    assert.equal(outgoing, `00-0af7651916cd43dd8448eb211c80319c-${child?.spanId}-01`);
    tele.stop();
  });

  it('keeps an upstream "not sampled" decision and passes it on', () => {
    const tele = captureTelemetry({ samplingRatio: 1 });
    const unsampled = upstream.replace(/-01$/, '-00');
    const outgoing = continueTrace(unsampled, 'handle', () => spanFn('x', () => currentTraceparent())());
    assert.equal(tele.startedSpans(), 0);
    assert.equal(outgoing, unsampled);
    tele.stop();
  });

  it('starts a new trace for a missing or malformed traceparent', () => {
    const tele = captureTelemetry();
    for (const bad of [
      undefined,
      '',
      'garbage',
      '00-xyz-abc-01',
      `00-${'0'.repeat(32)}-b7ad6b7169203331-01`,
      `ff${upstream.slice(2)}`,
    ]) {
      continueTrace(bad, 'handle', () => undefined);
    }
    const roots = tele.spans();
    assert.equal(roots.length, 6);
    for (const r of roots) {
      assert.equal(r.parentSpanId, undefined);
      assert.notEqual(r.traceId, '0af7651916cd43dd8448eb211c80319c');
    }
    tele.stop();
  });

  it('parses traceparent strictly', () => {
    assert.deepEqual(parseTraceparent(upstream), {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: 1,
      isRemote: true,
    });
    assert.equal(parseTraceparent(`${upstream}-extra`), null); // version 00 has exactly 4 parts
    assert.equal(parseTraceparent(`01${upstream.slice(2)}-future`)?.traceFlags, 1); // later versions may extend
    assert.equal(parseTraceparent(upstream.toUpperCase()), null);
    assert.equal(parseTraceparent(`00-0af7651916cd43dd8448eb211c80319c-${'0'.repeat(16)}-01`), null);
  });
});

describe('forked traces', () => {
  it('give each request on a connection its own trace, linked to the connection trace', async () => {
    const tele = captureTelemetry();
    await TelemetryContext.current()
      .withForkedTrace('connection')
      .apply(async () => {
        const conn = TelemetryContext.current();
        await Promise.all(
          [1, 2].map((i) =>
            conn
              .withForkedLog()
              .withForkedTrace('request')
              .apply(() => spanFn('respond', async () => sleep(i))()),
          ),
        );
      });
    const roots = tele.spans();
    const conn = roots.find((s) => s.name === 'connection');
    const reqs = roots.filter((s) => s.name === 'request');
    assert.equal(reqs.length, 2);
    const traces = new Set([conn?.traceId, ...reqs.map((r) => r.traceId)]);
    assert.equal(traces.size, 3, 'three distinct traces');
    for (const r of reqs) {
      assert.deepEqual(r.links, [{ traceId: conn?.traceId, spanId: conn?.spanId }]);
      assert.deepEqual(names(r.children), ['respond']);
    }
    tele.stop();
  });

  it('fork() is withForkedLog().withForkedTrace(): a linked trace of its own, recorded when observed', () => {
    const tele = captureTelemetry({ samplingRatio: 1 });
    TelemetryContext.current()
      .fork('connection', { logFields: () => ({ conn_id: 'c-9' }) })
      .apply(() => {
        TelemetryContext.current()
          .fork('request')
          .apply(() => log.info('in request'));
      });
    const spans = tele.spans();
    const conn = spans.find((s) => s.name === 'connection');
    const req = spans.find((s) => s.name === 'request');
    assert.notEqual(req?.traceId, conn?.traceId);
    assert.deepEqual(req?.links, [{ traceId: conn?.traceId, spanId: conn?.spanId }]);
    assert.deepEqual(tele.logs[0]?.fields, { conn_id: 'c-9' });
    assert.equal(tele.logs[0]?.traceId, req?.traceId);
    tele.stop();
  });

  it('inherit the connection decision unless told otherwise', () => {
    const tele = captureTelemetry({ samplingRatio: 1 });
    TelemetryContext.current()
      .withForkedTrace('connection', { sampled: false })
      .apply(() => {
        const conn = TelemetryContext.current();
        conn.withForkedTrace('request').apply(() => undefined);
        conn.withForkedTrace('request (forced)', { sampled: true }).apply(() => undefined);
      });
    assert.deepEqual(
      tele.spans().map((s) => [s.name, s.links.length]),
      [['request (forced)', 0]],
    );
    tele.stop();
  });
});

describe('unobserved tracing', () => {
  it('creates no OTel span while no processor is attached, yet keeps "sampled" for logs and traceparent', async () => {
    const cfg = defaultTelemetrySettings().tracing; // on, ratio 1, OTLP off: the defaults
    await configureTracing(cfg, 'unobserved-test');
    after(() => shutdownTracing());
    let tp: string | undefined;
    let childSpan: unknown;
    let sampled = false;
    TelemetryContext.current()
      .withForkedTrace('connection')
      .apply(() => {
        TelemetryContext.current()
          .withForkedTrace('request')
          .apply(() => {
            const ctx = TelemetryContext.current();
            sampled = ctx.sampled;
            assert.equal(ctx.span, null);
            spanFn('child', () => {
              childSpan = TelemetryContext.current().span;
            })();
            tp = currentTraceparent();
          });
      });
    assert.equal(sampled, true);
    assert.equal(childSpan, null);
    assert.match(tp ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // `fork` (log and trace in one step): ids drawn when first read, then stable.
    TelemetryContext.current()
      .fork('connection')
      .apply(() => {
        const ctx = TelemetryContext.current();
        assert.equal(ctx.sampled, true);
        assert.equal(ctx.span, null);
        const id = ctx.traceId;
        assert.match(id ?? '', /^[0-9a-f]{32}$/);
        assert.equal(ctx.traceId, id);
        assert.equal(ctx.traceparent(), ctx.traceparent());
        assert.ok(ctx.traceparent()?.startsWith(`00-${id}-`));
        ctx.fork('request').apply(() => assert.notEqual(TelemetryContext.current().traceId, id));
      });
    // Attached again (a capture, an exporter): spans are recorded as before.
    const tele = captureTelemetry({ samplingRatio: 1 });
    TelemetryContext.current()
      .withForkedTrace('observed')
      .apply(() => undefined);
    assert.deepEqual(
      tele.spans().map((s) => s.name),
      ['observed'],
    );
    tele.stop();
  });
});

describe('OTLP export', () => {
  it('posts finished spans to the configured OTLP/HTTP endpoint', async () => {
    const bodies: { url: string | undefined; type: string | undefined; body: string }[] = [];
    const collector = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        bodies.push({ url: req.url, type: req.headers['content-type'], body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    after(() => collector.close());
    const { port } = collector.address() as AddressInfo;
    const cfg = defaultTelemetrySettings().tracing;
    cfg.otlp = {
      ...cfg.otlp,
      enabled: true,
      endpoint: `http://127.0.0.1:${port}/v1/traces`,
      export_interval: 60_000,
    };
    await configureTracing(cfg, 'export-test');
    await spanFn('exported', async () => spanFn('exported child', () => undefined)())();
    await flushTracing();
    await shutdownTracing();
    assert.equal(bodies.length, 1);
    assert.equal(bodies[0]?.url, '/v1/traces');
    assert.match(bodies[0]?.type ?? '', /application\/json/);
    const payload = JSON.parse(bodies[0]?.body ?? '{}');
    const resource = payload.resourceSpans[0];
    assert.ok(
      resource.resource.attributes.some(
        (a: { key: string; value: { stringValue?: string } }) =>
          a.key === 'service.name' && a.value.stringValue === 'export-test',
      ),
    );
    const spans = resource.scopeSpans[0].spans.map((s: { name: string }) => s.name).sort();
    assert.deepEqual(spans, ['exported', 'exported child']);
  });
});

describe('OTLP export failures', () => {
  it('are logged as warnings, never thrown', async () => {
    const dead = http.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const { port } = dead.address() as AddressInfo;
    await new Promise((r) => dead.close(r)); // nothing listens there any more
    const tele = captureTelemetry();
    after(() => tele.stop());
    const cfg = defaultTelemetrySettings().tracing;
    cfg.otlp = {
      ...cfg.otlp,
      enabled: true,
      endpoint: `http://127.0.0.1:${port}/v1/traces`,
      export_interval: 60_000,
      export_timeout: 500,
    };
    await configureTracing(cfg, 'export-test');
    spanFn('lost', () => undefined)();
    await flushTracing();
    await shutdownTracing();
    const warning = tele.logs.find((r) => r.msg === 'trace export failed');
    assert.equal(warning?.level, 'WARN');
    assert.match(String((warning?.fields.err as Error | undefined)?.message), /ECONNREFUSED|connect/);
    tele.stop();
  });
});
