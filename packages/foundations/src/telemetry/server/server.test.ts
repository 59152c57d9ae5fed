import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initTelemetry, type Telemetry } from '../index.ts';
import { configureMetrics, counter, defineMetrics, gauge, histogram } from '../metrics/define.ts';
import { defaultTelemetrySettings } from '../settings-types.ts';
import { captureTelemetry } from '../testing.ts';

const demo = defineMetrics('demo', {
  requests_total: counter<{ endpoint: string; status_code: number }>('Number of requests.'),
  active_connections: gauge('Open connections.'),
  latency_seconds: histogram<{ endpoint: string }>('Request latency in seconds.'),
  optional_events_total: counter('Reported only with report_optional.', { optional: true }),
});

let tele: Telemetry;
let base: string;

before(async () => {
  const settings = defaultTelemetrySettings();
  settings.logging.verbosity = 'ERROR';
  settings.memory_profiler.sampling_interval = 32 * 1024; // enough samples for a small test heap
  tele = await initTelemetry({ name: 'telemetry-test', version: '0.0.0', description: 'test' }, settings, {
    crash: false, // node:test owns this process's crash handling
  });
  base = tele.server?.url() ?? '';
  tele.server?.addRoute('GET', '/app/status', (req) => ({
    contentType: 'application/json',
    body: JSON.stringify({ ok: true, q: req.url.searchParams.get('q') }),
  }));
  tele.server?.addRoute('POST', '/app/fail', () => {
    throw new Error('handler bug');
  });
});
after(() => tele.shutdown());

function promtoolInstalled(): boolean {
  return spawnSync('promtool', ['--version']).error === undefined;
}

function promtoolAccepts(text: string): void {
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(`${check.stdout}${check.stderr}`, '', 'promtool reports no problem');
  assert.equal(check.status, 0);
}

/** A raw request, so tests can send what fetch refuses to. */
function raw(text: string): Promise<string> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port: Number(port) }, () => c.end(text));
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d) => {
      out += d;
    });
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

describe('telemetry server', () => {
  it('answers /health', async () => {
    const r = await fetch(`${base}/health`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'ok\n');
  });

  it('serves /metrics that promtool accepts with no problem at all', async (t) => {
    demo.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    demo.active_connections().set(2);
    demo.latency_seconds({ endpoint: 'main' }).observe(0.02);
    demo.optional_events_total().inc();
    const r = await fetch(`${base}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    assert.match(text, /^telemetry_test_demo_requests_total\{endpoint="main",status_code="200"\} 1$/m);
    assert.match(text, /^telemetry_test_demo_latency_seconds_bucket\{le="0\.025",endpoint="main"\} 1$/m);
    assert.match(text, /^process_cpu_seconds_total \d/m);
    assert.match(text, /^nodejs_heap_size_used_bytes \d/m);
    assert.doesNotMatch(text, /optional_events_total/);
    if (!promtoolInstalled()) {
      t.skip('promtool is not installed (Debian package "prometheus")');
      return;
    }
    promtoolAccepts(text);
  });

  it('stays promtool-clean with the service name as a label', async (t) => {
    configureMetrics({ service: 'telemetry-test', format: 'label_with_name', reportOptional: true });
    after(() =>
      configureMetrics({ service: 'telemetry-test', format: 'metric_prefix', reportOptional: false }),
    );
    demo.requests_total({ endpoint: 'main', status_code: 200 }).inc();
    demo.optional_events_total().inc();
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(
      text,
      /^demo_requests_total\{endpoint="main",status_code="200",service="telemetry-test"\} 1$/m,
    );
    assert.match(text, /^demo_optional_events_total\{service="telemetry-test"\} 1$/m);
    assert.match(text, /^process_cpu_seconds_total\{service="telemetry-test"\} /m);
    if (!promtoolInstalled()) {
      t.skip('promtool is not installed (Debian package "prometheus")');
      return;
    }
    promtoolAccepts(text);
  });

  it('serves a heap profile that Chrome DevTools can open', async () => {
    // About 8 MiB kept alive: some 250 samples expected at one per 32 KiB.
    const keep = Array.from({ length: 4000 }, (_, i) => ({ i, s: `x${i}`.repeat(400) }));
    const r = await fetch(`${base}/pprof/heap`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-disposition') ?? '', /\.heapprofile"$/);
    const profile = (await r.json()) as {
      head: { callFrame: { functionName: string }; children: unknown[] };
      samples: unknown[];
    };
    assert.equal(typeof profile.head.callFrame.functionName, 'string');
    assert.ok(Array.isArray(profile.head.children));
    assert.ok(
      Array.isArray(profile.samples) && profile.samples.length > 0,
      'some live allocations were sampled',
    );
    assert.equal(keep.length, 4000);
  });

  it('serves heap statistics as JSON', async () => {
    const r = await fetch(`${base}/pprof/heap_stats`);
    assert.equal(r.status, 200);
    const stats = (await r.json()) as {
      heap: { used_heap_size: number };
      spaces: { space_name: string }[];
      process: { rss: number };
    };
    assert.ok(stats.heap.used_heap_size > 0);
    assert.ok(stats.spaces.some((s) => s.space_name === 'old_space'));
    assert.ok(stats.process.rss > 0);
  });

  it('serves a CPU profile for the requested seconds, one at a time', async () => {
    const t0 = Date.now();
    const [first, second] = await Promise.all([
      fetch(`${base}/pprof/profile?seconds=1`),
      new Promise((r) => setTimeout(r, 100)).then(() => fetch(`${base}/pprof/profile?seconds=1`)),
    ]);
    assert.equal(first.status, 200);
    assert.ok(Date.now() - t0 >= 950);
    assert.match(first.headers.get('content-disposition') ?? '', /\.cpuprofile"$/);
    const profile = (await first.json()) as { nodes: unknown[]; startTime: number; endTime: number };
    assert.ok(profile.nodes.length > 0);
    assert.ok(profile.endTime - profile.startTime >= 900_000, 'about one second, in microseconds');
    assert.equal(second.status, 409);
    await second.text();
  });

  it('rejects bad seconds with 400', async () => {
    for (const q of [
      'seconds=0',
      'seconds=301',
      'seconds=abc',
      'seconds=1.5',
      'seconds=-1',
      'seconds=',
      'seconds=1e2',
    ]) {
      const r = await fetch(`${base}/pprof/profile?${q}`);
      assert.equal(r.status, 400, q);
      assert.match(await r.text(), /^seconds: expected an integer from 1 to 300/);
    }
  });

  it('answers 409 for a heap profile while the heap profiler is off', async () => {
    const { startHeapSampling, stopProfiling } = await import('./profiling.ts');
    await stopProfiling();
    const r = await fetch(`${base}/pprof/heap`);
    assert.equal(r.status, 409);
    assert.match(await r.text(), /telemetry\.memory_profiler\.enabled/);
    await startHeapSampling(32 * 1024);
    assert.equal((await fetch(`${base}/pprof/heap`)).status, 200);
  });

  it('answers 404 for an unknown route and 405 for a wrong method', async () => {
    const nf = await fetch(`${base}/nope`);
    assert.equal(nf.status, 404);
    await nf.text();
    const na = await fetch(`${base}/metrics`, { method: 'DELETE' });
    assert.equal(na.status, 405);
    assert.equal(na.headers.get('allow'), 'GET');
    await na.text();
    const head = await fetch(`${base}/health`, { method: 'HEAD' });
    assert.equal(head.status, 200);
  });

  it('answers malformed requests with 4xx and keeps serving', async () => {
    assert.match(await raw('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await raw('GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 (400|404)/);
    assert.match(
      await raw(`GET /health HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`),
      /^HTTP\/1\.1 431/,
    );
    assert.equal((await fetch(`${base}/health`)).status, 200);
  });

  it('serves routes the app adds, and turns a throwing handler into a 500', async () => {
    const r = await fetch(`${base}/app/status?q=1`);
    assert.deepEqual(await r.json(), { ok: true, q: '1' });
    const logs = captureTelemetry();
    const f = await fetch(`${base}/app/fail`, { method: 'POST' });
    logs.stop();
    assert.equal(f.status, 500);
    assert.deepEqual(
      logs.logs.map((r) => [r.level, r.msg, (r.fields.err as Error).message, r.fields.path]),
      [['ERROR', 'telemetry server: failed to answer', 'handler bug', '/app/fail']],
    );
    assert.throws(() => tele.server?.addRoute('GET', '/health', () => ({ body: '' })), /already defined/);
    assert.equal((await fetch(`${base}/health`)).status, 200);
  });
});

describe('telemetry server on a Unix socket', () => {
  it('listens on a socket path and replaces a stale socket file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fnd-tele-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'telemetry.sock');
    // A stale socket: bound by a process that has gone.
    execFileSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.exit(0))`,
    ]);
    assert.ok(fs.statSync(sock).isSocket());
    const { TelemetryServer } = await import('./server.ts');
    const server = await TelemetryServer.start({ kind: 'unix', path: sock });
    after(() => server.close());
    assert.deepEqual(server.address(), { kind: 'unix', path: sock });
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ socketPath: sock, path: '/health' }, (res) => {
          let b = '';
          res.on('data', (d) => {
            b += d;
          });
          res.on('end', () => resolve(b));
        })
        .on('error', reject);
    });
    assert.equal(body, 'ok\n');
    // A live socket is never taken over.
    await assert.rejects(
      TelemetryServer.start({ kind: 'unix', path: sock }),
      /telemetry\.server\.addr: cannot listen/,
    );
  });
});
