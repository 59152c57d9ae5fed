import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { isFoundationsError } from '../../errors.ts';
import { captureTelemetry } from '../testing.ts';
import { configureMetrics, counter, defineMetrics, gauge, histogram } from './define.ts';
import { renderMetrics } from './registry.ts';

const http = defineMetrics('http', {
  requests_total: counter<{ endpoint: string; status_code: number }>('Number of HTTP requests.'),
  active_connections: gauge('Number of active client connections.'),
  latency_seconds: histogram<{ endpoint: string }>('Request latency.', { buckets: [0.01, 0.1, 1] }),
  debug_events_total: counter<{ kind: string }>('Detailed events, reported only on request.', {
    optional: true,
  }),
});

const buffered = defineMetrics('buf', {
  events_total: counter<{ kind: string }>('Events.'),
  plain_total: counter('Events without labels.'),
  level: gauge<{ pool: string }>('A level.'),
  wait_seconds: histogram<{ pool: string }>('A wait.', { buckets: [0.01, 0.1, 1] }),
  plain_seconds: histogram('A wait without labels.', { buckets: [0.5, 2] }),
});

describe('typed metrics', () => {
  it('counts, gauges and observes, per label set', async () => {
    configureMetrics({ service: 'svc', format: 'metric_prefix', reportOptional: false });
    const tele = captureTelemetry();
    http.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    http.requests_total({ endpoint: 'main', status_code: 200 }).inc(2);
    http.requests_total({ endpoint: 'main', status_code: 500 }).inc();
    http.requests_total({ endpoint: 'admin', status_code: 200 }).inc();
    http.active_connections().inc();
    http.active_connections().inc();
    http.active_connections().dec();
    http.latency_seconds({ endpoint: 'main' }).observe(0.05);
    http.latency_seconds({ endpoint: 'main' }).observe(0.5);
    assert.equal(await tele.metricValue('http_requests_total', { endpoint: 'main', status_code: 200 }), 3);
    assert.equal(await tele.metricValue('http_requests_total', { endpoint: 'main' }), 4);
    assert.equal(await tele.metricValue('http_requests_total'), 5);
    assert.equal(await tele.metricValue('http_active_connections'), 1);
    assert.deepEqual(await tele.histogramValue('http_latency_seconds', { endpoint: 'main' }), {
      count: 2,
      sum: 0.55,
    });
    assert.equal(await tele.metricValue('http_never_used'), undefined);
    tele.stop();
  });

  it('prefixes names with the service name (metric_prefix)', async () => {
    configureMetrics({ service: 'my-proxy', format: 'metric_prefix', reportOptional: false });
    http.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    http.debug_events_total({ kind: 'x' }).inc();
    const text = await renderMetrics();
    assert.match(text, /^# HELP my_proxy_http_requests_total Number of HTTP requests\.$/m);
    assert.match(text, /^# TYPE my_proxy_http_requests_total counter$/m);
    assert.match(text, /^my_proxy_http_requests_total\{endpoint="main",status_code="200"\} 1$/m);
    assert.doesNotMatch(text, /debug_events_total/, 'optional metrics are not reported by default');
  });

  it('puts the service name in a label (label_with_name) and reports optional metrics on request', async () => {
    configureMetrics({ service: 'my-proxy', format: 'label_with_name', reportOptional: true });
    http.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    http.debug_events_total({ kind: 'x' }).inc();
    const text = await renderMetrics();
    assert.match(text, /^http_requests_total\{endpoint="main",status_code="200",service="my-proxy"\} 1$/m);
    assert.match(text, /^http_debug_events_total\{kind="x",service="my-proxy"\} 1$/m);
    configureMetrics({ service: 'svc', format: 'metric_prefix', reportOptional: false });
  });

  it('rejects names promtool would reject, and duplicates, at declaration', () => {
    const bad: [string, () => unknown, RegExp][] = [
      [
        'counter without _total',
        () => defineMetrics('bad', { requests: counter('x') }),
        /must end in "_total"/,
      ],
      [
        'gauge with _total',
        () => defineMetrics('bad', { open_total: gauge('x') }),
        /must not end in "_total"/,
      ],
      ['camelCase', () => defineMetrics('bad', { openConns: gauge('x') }), /snake_case/],
      ['reserved suffix', () => defineMetrics('bad', { size_sum: gauge('x') }), /_sum/],
      ['bad group', () => defineMetrics('Bad-Group', { a: gauge('x') }), /snake_case/],
      ['duplicate', () => defineMetrics('http', { active_connections: gauge('x') }), /declared twice/],
    ];
    for (const [what, fn, msg] of bad) {
      assert.throws(
        fn,
        (e: unknown) => isFoundationsError(e) && e.code === 'FND_ERR_TELEMETRY' && msg.test(e.message),
        what,
      );
    }
  });

  it('keeps the hot path cheap: a cached labelled child per label set', () => {
    configureMetrics({ service: 'svc', format: 'metric_prefix', reportOptional: false });
    const a = http.requests_total({ endpoint: 'main', status_code: 200 });
    const b = http.requests_total({ endpoint: 'main', status_code: 200 });
    assert.equal(a, b);
    const n = 200_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) http.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    const nsPerOp = ((performance.now() - t0) * 1e6) / n;
    assert.ok(nsPerOp < 5000, `${nsPerOp.toFixed(0)} ns per labelled inc`);
  });

  it('hands counter and gauge values to prom-client at each read, never twice', async () => {
    configureMetrics({ service: 'svc', format: 'metric_prefix', reportOptional: false });
    const tele = captureTelemetry();
    const a = buffered.events_total({ kind: 'a' });
    a.inc();
    a.inc(2.5);
    buffered.events_total({ kind: 'zero' }).inc(0);
    buffered.plain_total().inc();
    const level = buffered.level({ pool: 'p' });
    level.inc(5);
    level.dec(2);
    assert.equal(await tele.metricValue('buf_events_total', { kind: 'a' }), 3.5);
    assert.equal(await tele.metricValue('buf_events_total', { kind: 'zero' }), 0, 'inc(0) shows the series');
    assert.equal(await tele.metricValue('buf_plain_total'), 1);
    assert.equal(await tele.metricValue('buf_level', { pool: 'p' }), 3);
    // Read again with nothing new: same values; then more.
    assert.equal(await tele.metricValue('buf_events_total', { kind: 'a' }), 3.5);
    a.inc();
    level.set(-1);
    const text = await renderMetrics();
    assert.match(text, /^svc_buf_events_total\{kind="a"\} 4.5$/m);
    assert.match(text, /^svc_buf_level\{pool="p"\} -1$/m);
    assert.equal(await tele.metricValue('buf_level', { pool: 'p' }), -1);
    // What prom-client refuses, it still refuses.
    assert.throws(() => a.inc(-1), /not possible to decrease a counter/);
    assert.throws(() => a.inc(Number.POSITIVE_INFINITY), /not a valid number/);
    assert.throws(() => level.set('x' as unknown as number), /not a valid number/);
    assert.equal(await tele.metricValue('buf_events_total', { kind: 'a' }), 4.5);
    tele.stop();
  });

  it('renders buffered histograms exactly as prom-client does with the same observations', async () => {
    configureMetrics({ service: 'svc', format: 'metric_prefix', reportOptional: false });
    const registry = new Registry();
    const reference = new Histogram({
      name: 'svc_buf_wait_seconds',
      help: 'A wait.',
      labelNames: ['pool'],
      buckets: [0.01, 0.1, 1],
      registers: [registry],
    });
    const values = [0, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3, 250];
    const series = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('svc_buf_wait_seconds'))
        // Sums are added in another order (per read, not per observation): equal to 1e-9.
        .map((l) => l.replace(/ (\S+)$/, (_, v: string) => ` ${Number(Number(v).toPrecision(9))}`))
        .sort();
    for (const round of [1, 2]) {
      for (const [i, v] of values.entries()) {
        const pool = i % 2 === 0 ? 'a' : 'b';
        buffered.wait_seconds({ pool }).observe(v * round);
        reference.observe({ pool }, v * round);
      }
      // Read between rounds: nothing is added twice.
      assert.deepEqual(series(await renderMetrics()), series(await registry.metrics()), `round ${round}`);
    }
    const stop = buffered.plain_seconds().startTimer();
    buffered.plain_seconds().observe(1);
    stop();
    const text = await renderMetrics();
    assert.match(text, /^svc_buf_plain_seconds_count 2$/m);
    assert.match(text, /^svc_buf_plain_seconds_bucket\{le="0.5"\} 1$/m);
    assert.match(text, /^svc_buf_plain_seconds_bucket\{le="2"\} 2$/m);
    assert.throws(() => buffered.plain_seconds().observe(Number.NaN), /not a valid number/);
  });
});
