/**
 * Telemetry end to end over real HTTP on 127.0.0.1: a front service keeps a context per
 * connection, forks log and trace per request, and calls a backend service that stitches the
 * trace from the `traceparent` header. Both run in this process, so one capture sees all.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { continueTrace, currentTraceparent, log, spanFn, TelemetryContext } from './index.ts';
import { type CapturedSpan, captureTelemetry, type TelemetryCapture } from './testing.ts';

let backend: http.Server;
let front: http.Server;
let frontUrl: string;
let tele: TelemetryCapture;
const seenTraceparents: (string | undefined)[] = [];

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

before(async () => {
  tele = captureTelemetry();
  backend = http.createServer((req, res) => {
    const tp = req.headers.traceparent as string | undefined;
    seenTraceparents.push(tp);
    continueTrace(tp, 'backend request', () => {
      log.info('backend served');
      res.end('backend ok');
    });
  });
  const backendPort = await listen(backend);

  const callBackend = spanFn('call backend', async () => {
    const traceparent = currentTraceparent();
    const r = await fetch(`http://127.0.0.1:${backendPort}/`, {
      headers: traceparent ? { traceparent } : {},
    });
    return r.text();
  });

  let nextConn = 0;
  const connections = new WeakMap<object, TelemetryContext>();
  front = http.createServer({ keepAlive: true }, async (req, res) => {
    const conn = connections.get(req.socket);
    assert.ok(conn);
    let ctx = conn.withForkedLog();
    if (req.headers['x-debug'] === '1') ctx = ctx.withSamplingRatio(1); // trace this request whatever the ratio
    await ctx.withForkedTrace('request').apply(async () => {
      TelemetryContext.current().addFields({ url: req.url });
      log.info('request received');
      const body = await callBackend();
      res.end(body);
    });
  });
  front.on('connection', (socket) => {
    // One context and one trace per connection, for its lifetime.
    const conn = TelemetryContext.root()
      .withForkedLog()
      .addFields({ conn_id: ++nextConn })
      .withForkedTrace('connection')
      .begin();
    connections.set(socket, conn.context);
    socket.on('close', () => conn.end());
  });
  frontUrl = `http://127.0.0.1:${await listen(front)}`;
});

after(async () => {
  tele.stop();
  front.closeAllConnections();
  await new Promise((r) => front.close(r));
  await new Promise((r) => backend.close(r));
});

/** Sends `paths` one after another on one keep-alive connection. */
async function onOneConnection(paths: { path: string; debug?: boolean }[]): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (const { path, debug } of paths) {
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get(`${frontUrl}${path}`, { agent, headers: debug ? { 'x-debug': '1' } : {} }, (res) => {
            let b = '';
            res.on('data', (d) => {
              b += d;
            });
            res.on('end', () => resolve(b));
          })
          .on('error', reject);
      });
      assert.equal(body, 'backend ok');
    }
  } finally {
    agent.destroy();
  }
  await new Promise((r) => setTimeout(r, 50)); // let the server see the close
}

function find(spans: CapturedSpan[], name: string): CapturedSpan[] {
  return spans.flatMap((s) => [...(s.name === name ? [s] : []), ...find(s.children, name)]);
}

describe('telemetry over real HTTP', () => {
  it('forks log fields and traces per request, and stitches the backend into each trace', async () => {
    tele.clear();
    await onOneConnection([{ path: '/a' }, { path: '/b' }, { path: '/c' }]);

    const received = tele.logs.filter((r) => r.msg === 'request received').map((r) => r.fields);
    assert.deepEqual(received, [
      { conn_id: 1, url: '/a' },
      { conn_id: 1, url: '/b' },
      { conn_id: 1, url: '/c' },
    ]);

    const roots = tele.spans();
    const [conn] = find(roots, 'connection');
    const requests = roots.filter((s) => s.name === 'request');
    assert.ok(conn);
    assert.equal(requests.length, 3);
    assert.equal(new Set(requests.map((r) => r.traceId)).size, 3, 'one trace per request');
    for (const req of requests) {
      assert.notEqual(req.traceId, conn.traceId);
      assert.deepEqual(req.links, [{ traceId: conn.traceId, spanId: conn.spanId }]);
      const [call] = req.children;
      assert.equal(call?.name, 'call backend');
      const [backendSpan] = call?.children ?? [];
      assert.equal(backendSpan?.name, 'backend request', 'the backend span continues the caller trace');
      assert.equal(backendSpan?.traceId, req.traceId);
      assert.equal(backendSpan?.parentSpanId, call?.spanId);
    }
    assert.deepEqual(
      seenTraceparents.slice(-3).map((tp) => tp?.endsWith('-01')),
      [true, true, true],
    );
  });

  it('samples one request when its branch overrides a sampling ratio of 0', async () => {
    const low = captureTelemetry({ samplingRatio: 0 });
    seenTraceparents.length = 0;
    await onOneConnection([{ path: '/x' }, { path: '/debug', debug: true }, { path: '/y' }]);
    const roots = low.spans();
    assert.deepEqual(
      roots.map((s) => s.name),
      ['request'],
      'only the overridden request is traced (not even the connection)',
    );
    assert.deepEqual(find(roots, 'backend request').length, 1);
    assert.deepEqual(
      seenTraceparents.map((tp) => tp?.slice(-2)),
      ['00', '01', '00'],
      'the backend is told which requests are sampled',
    );
    const fields = low.logs.filter((r) => r.msg === 'request received').map((r) => r.fields.url);
    assert.deepEqual(fields, ['/x', '/debug', '/y'], 'logs do not depend on sampling');
    low.stop();
  });
});
