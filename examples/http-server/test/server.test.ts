/**
 * The example server end to end: as a real process configured by a `-c` file (port 0), and
 * in-process under a telemetry capture to check the per-connection and per-request contexts.
 */
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultSettings, formatListenAddr, parseSettings } from 'foundations/settings';
import { captureTelemetry } from 'foundations/telemetry/testing';
import { startEndpoint } from '../server.ts';
import { HttpServerSettings } from '../settings.ts';

const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'example-http-'));
const children: ChildProcessByStdio<null, Readable, Readable>[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** GETs `path` from `addr` ("host:port") through `agent`; resolves with status and body. */
function get(addr: string, path: string, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${addr}${path}`, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('as a process: serves the configured routes, logs per connection and request, counts', async () => {
  const config = join(dir, 'test.yaml');
  writeFileSync(
    config,
    'telemetry:\n  logging:\n    format: json\nendpoints:\n  Example endpoint:\n    addr: "127.0.0.1:0"\n',
  );
  const child = spawn(process.execPath, [MAIN, '-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const records: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let buffered = '';
  child.stdout.on('data', (d) => {
    buffered += d;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      records.push(JSON.parse(buffered.slice(0, nl)));
      buffered = buffered.slice(nl + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  const record = async (msg: string) => {
    for (;;) {
      const found = records.find((r) => r.msg === msg);
      if (found) return found;
      if (child.exitCode !== null) assert.fail(`exited early: ${stderr}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  const addr = String((await record('endpoint started')).addr);
  const telemetryAddr = String((await record('telemetry server started')).addr);
  assert.match(addr, /^127\.0\.0\.1:\d+$/);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  assert.deepEqual(await get(addr, '/hello', agent), { status: 200, body: 'World' });
  assert.deepEqual(await get(addr, '/foo', agent), { status: 403, body: 'bar' });
  assert.deepEqual(await get(addr, '/missing', agent), { status: 404, body: 'Not found' });
  agent.destroy();

  const metrics = (await get(telemetryAddr, '/metrics')).body;
  const series = (name: string) =>
    new RegExp(`^http_server_http_server_${name} (\\d+)$`, 'm').exec(metrics)?.[1];
  assert.equal(series('requests_total\\{endpoint_name="Example endpoint"\\}'), '3');
  assert.equal(series('requests_failed_total\\{endpoint_name="Example endpoint",status_code="403"\\}'), '1');
  assert.equal(series('requests_failed_total\\{endpoint_name="Example endpoint",status_code="404"\\}'), '1');

  const served = records.filter((r) => r.msg === 'request served');
  assert.deepEqual(
    served.map((r) => [r.path, r.status_code]),
    [
      ['/hello', 200],
      ['/foo', 403],
      ['/missing', 404],
    ],
  );
  // one keep-alive connection: every request record carries that connection's fields
  assert.equal(new Set(served.map((r) => r.conn_id)).size, 1);
  assert.ok(served.every((r) => r.endpoint === 'Example endpoint' && typeof r.remote === 'string'));

  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr);
  assert.ok(records.some((r) => r.msg === 'shutting down'));
  assert.equal(stderr, '');
});

test('in-process: one connection span, one forked trace per request linked to it', async () => {
  const tele = captureTelemetry();
  after(() => tele.stop());
  const settings = parseSettings(HttpServerSettings, [
    { source: 'test', value: { endpoints: { test: { routes: { '/a': { response: 'A' } } } } } },
  ]);
  const endpoint = await startEndpoint('test', settings.endpoints.test!);
  const addr = formatListenAddr(endpoint.addr);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  assert.deepEqual(await get(addr, '/a', agent), { status: 200, body: 'A' });
  assert.deepEqual(await get(addr, '/b', agent), { status: 404, body: 'Not found' });
  agent.destroy();
  // a client that does not speak HTTP: answered 400 and counted as a failed connection
  const raw = net.connect(endpoint.addr.kind === 'tcp' ? endpoint.addr.port : 0, '127.0.0.1');
  raw.end('NOT HTTP\r\n\r\n');
  let answer = '';
  for await (const chunk of raw) answer += chunk;
  assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
  await endpoint.close();
  await new Promise((r) => setTimeout(r, 50)); // the server sees the close
  const roots = tele.spans();
  const connections = roots.filter((s) => s.name === 'connection');
  const requests = roots.filter((s) => s.name === 'request');
  assert.equal(connections.length, 2, 'the keep-alive connection and the raw one');
  assert.equal(requests.length, 2);
  const conn = connections.find((c) => c.traceId === requests[0]!.links[0]?.traceId);
  assert.ok(conn, 'requests link to their connection');
  for (const r of requests) {
    assert.notEqual(r.traceId, conn.traceId, 'a forked trace is a new trace');
    assert.deepEqual(r.links, [{ traceId: conn.traceId, spanId: conn.spanId }]);
    assert.deepEqual(
      r.children.map((c) => c.name),
      ['respond to request'],
    );
  }
  const served = tele.logs.filter((r) => r.msg === 'request served');
  assert.deepEqual(
    served.map((r) => [r.fields.path, r.fields.status_code, r.fields.endpoint]),
    [
      ['/a', 200, 'test'],
      ['/b', 404, 'test'],
    ],
  );
  assert.equal(served[0]!.fields.conn_id, served[1]!.fields.conn_id);
  assert.equal(await tele.metricValue('http_server_requests_total', { endpoint_name: 'test' }), 2);
  assert.equal(
    await tele.metricValue('http_server_requests_failed_total', { endpoint_name: 'test', status_code: 404 }),
    1,
  );
  assert.equal(await tele.metricValue('http_server_active_connections', { endpoint_name: 'test' }), 0);
  assert.equal(await tele.metricValue('http_server_failed_connections_total', { endpoint_name: 'test' }), 1);
  const failed = tele.logs.find((r) => r.msg === 'failed to serve HTTP');
  assert.equal(failed?.level, 'WARN');
  assert.equal(typeof failed?.fields.conn_id, 'number', 'logged with the connection fields');
  assert.ok(defaultSettings(HttpServerSettings).endpoints['Example endpoint']);
});
