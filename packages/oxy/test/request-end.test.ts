/**
 * `HttpRequestHook.handleRequestEnd` fires once for every kind of request and tunnel, with the
 * facts of its audit record, on the fast paths too (an app implementing only this hook keeps
 * every fast path: lean forwarding, whole tunnels, raw datagrams). Also: the upstream address
 * and its reuse on the request context of pooled requests, and the DEBUG line of a failed
 * request.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import {
  ConnectDirective,
  defineApp,
  EgressDecision,
  type RequestContext,
  type RequestEndInfo,
} from '../src/index.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';
import {
  connectTunnel,
  connectTunnelH2,
  proxyRequest,
  readBytes,
  readUntil,
} from '../src/testing/clients.ts';
import { captureTelemetry } from '../src/testing/index.ts';
import {
  type HttpUpstream,
  startHttpUpstream,
  startTcpEcho,
  type TcpPeer,
  unusedPort,
} from '../src/testing/peers.ts';

const tele = captureTelemetry({ verbosity: 'DEBUG' });

interface Seen {
  readonly info: RequestEndInfo;
  readonly ctxUpstream: string | null;
  readonly ctxReused: boolean;
}
const ended: Seen[] = [];

const endOnly = defineApp({
  name: 'end-only',
  version: '1.0.0',
  description: 'implements handleRequestEnd only, so every fast path stays on',
  start: () => ({
    httpRequest: {
      handleRequestEnd: (info: RequestEndInfo, ctx: RequestContext) => {
        ended.push({ info, ctxUpstream: ctx.upstream, ctxReused: ctx.upstreamReused });
      },
    },
  }),
});

/** What `handleResponse` saw on the request context, per request. */
const atResponse: { upstream: string | null; reused: boolean }[] = [];

const withHooks = defineApp({
  name: 'with-hooks',
  version: '1.0.0',
  description: 'request and egress hooks (the node:http path), blocks for some targets',
  start: () => ({
    httpRequest: {
      handleProxyConnectRequest: (head) =>
        head.authority.startsWith('denied.')
          ? ConnectDirective.block(403, 'no denied.*')
          : ConnectDirective.allow(),
      handleResponse: (_res, ctx) => {
        atResponse.push({ upstream: ctx.upstream, reused: ctx.upstreamReused });
        return undefined;
      },
      handleRequestEnd: (info: RequestEndInfo, ctx: RequestContext) => {
        ended.push({ info, ctxUpstream: ctx.upstream, ctxReused: ctx.upstreamReused });
        if (info.target.startsWith('throw.')) throw new Error('end hook exploded');
      },
    },
    egress: {
      handleConnection: (target) =>
        target.host.startsWith('blocked.')
          ? EgressDecision.block('no blocked.*')
          : EgressDecision.direct(target),
    },
  }),
});

let fast: AppUnderTest;
let hooked: AppUnderTest;
let upstream: HttpUpstream;
let echo: TcpPeer;
let udpEcho: dgram.Socket;
let upgrader: http.Server;

before(async () => {
  upstream = await startHttpUpstream({ '/x': { body: 'hello' } });
  echo = await startTcpEcho();
  udpEcho = dgram.createSocket('udp4');
  udpEcho.on('message', (m, from) => udpEcho.send(m, from.port, from.address));
  udpEcho.bind(0, '127.0.0.1');
  await once(udpEcho, 'listening');
  // Answers an Upgrade with 101 and echoes the upgraded bytes.
  upgrader = http.createServer((_req, res) => res.end('no'));
  upgrader.on('upgrade', (_req, socket: net.Socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    socket.pipe(socket);
  });
  upgrader.listen(0, '127.0.0.1');
  await once(upgrader, 'listening');
  fast = await startApp(endOnly, {
    settings: {
      endpoints: {
        main: {},
        raw: { protocol: 'tcp', tcp: { target: `127.0.0.1:${echo.port}` } },
        dgram: {
          protocol: 'udp',
          addr: '127.0.0.1:0',
          udp: { target: `127.0.0.1:${udpEcho.address().port}`, idle_timeout: '100ms' },
        },
      },
    },
  });
  hooked = await startApp(withHooks);
});

after(async () => {
  tele.stop();
  await hooked.stop(); // started last: stopped first, so fast's leak check does not see its server
  await fast.stop();
  await upstream.close();
  await echo.close();
  udpEcho.close();
  upgrader.closeAllConnections();
  await new Promise((resolve) => upgrader.close(resolve));
});

/** Waits until `n` more end events arrived after `from`, and returns them. */
async function endsAfter(from: number, n: number): Promise<RequestEndInfo[]> {
  const deadline = Date.now() + 5000;
  while (ended.length < from + n) {
    assert.ok(Date.now() < deadline, `expected ${n} end events, saw ${ended.length - from}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return ended.slice(from, from + n).map((s) => s.info);
}

function assertTimings(info: RequestEndInfo): void {
  assert.ok(info.durationMs >= 0);
  if (info.connectMs !== null) assert.ok(info.connectMs <= info.durationMs, 'connect before the end');
  if (info.firstByteMs !== null) {
    assert.ok(info.connectMs !== null && info.connectMs <= info.firstByteMs, 'connect before the response');
    assert.ok(info.firstByteMs <= info.durationMs, 'response before the end');
  }
}

test('two lean requests on one keep-alive connection: one event each, the second on the reused upstream', async () => {
  const start = ended.length;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await proxyRequest(fast.address(), `http://127.0.0.1:${upstream.port}/x`, { agent });
      assert.equal(res.text, 'hello');
    }
  } finally {
    agent.destroy();
  }
  const [a, b] = await endsAfter(start, 2);
  for (const info of [a!, b!]) {
    assert.equal(info.kind, 'forward');
    assert.equal(info.method, 'GET');
    assert.equal(info.target, `127.0.0.1:${upstream.port}`);
    assert.equal(info.status, 200);
    assert.equal(info.upstream, `127.0.0.1:${upstream.port}`);
    assert.equal(info.bytesDown, 5);
    assert.equal(info.closeReason, 'done');
    assert.equal(info.error, null);
    assert.notEqual(info.firstByteMs, null);
    assertTimings(info);
  }
  assert.deepEqual([a!.upstreamReused, b!.upstreamReused], [false, true]);
  assert.deepEqual(
    ended.slice(start).map((s) => [s.ctxUpstream, s.ctxReused]),
    [
      [`127.0.0.1:${upstream.port}`, false],
      [`127.0.0.1:${upstream.port}`, true],
    ],
    'the request context says the same',
  );
});

test('a CONNECT tunnel (whole on the reactor) ends with its bytes both ways', async () => {
  const start = ended.length;
  const tunnel = await connectTunnel(fast.address(), `127.0.0.1:${echo.port}`);
  tunnel.socket.write('ping!');
  assert.equal((await readBytes(tunnel.socket, 5)).toString(), 'ping!');
  tunnel.socket.end();
  const [info] = await endsAfter(start, 1);
  assert.equal(info!.kind, 'connect');
  assert.equal(info!.method, 'CONNECT');
  assert.equal(info!.status, 200);
  assert.equal(info!.upstream, `127.0.0.1:${echo.port}`);
  assert.deepEqual([info!.bytesUp, info!.bytesDown], [5, 5]);
  assert.equal(info!.firstByteMs, null, 'a tunnel has no response head');
  assert.notEqual(info!.connectMs, null);
  assert.equal(info!.error, null);
  assertTimings(info!);
});

test('a CONNECT stream over HTTP/2 ends with an event', async () => {
  const start = ended.length;
  const h2 = await connectTunnelH2(fast.address(), `127.0.0.1:${echo.port}`);
  assert.equal(h2.status, 200);
  h2.stream.write('abc');
  assert.equal((await readBytes(h2.stream, 3)).toString(), 'abc');
  h2.stream.end();
  const [info] = await endsAfter(start, 1);
  await new Promise<void>((resolve) => h2.session.close(() => resolve()));
  assert.equal(info!.kind, 'connect');
  assert.deepEqual([info!.status, info!.bytesUp, info!.bytesDown], [200, 3, 3]);
});

test('an Upgrade ends with an event', async () => {
  const start = ended.length;
  const [host, port] = fast.address().split(':');
  const socket = net.connect({ host, port: Number(port) });
  const target = `127.0.0.1:${(upgrader.address() as net.AddressInfo).port}`;
  socket.write(
    `GET http://${target}/ws HTTP/1.1\r\nHost: ${target}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`,
  );
  assert.match(await readUntil(socket, '\r\n\r\n'), /^HTTP\/1.1 101/);
  socket.write('up');
  assert.equal((await readBytes(socket, 2)).toString(), 'up');
  socket.end();
  const [info] = await endsAfter(start, 1);
  assert.equal(info!.kind, 'upgrade');
  assert.equal(info!.status, 101);
  assert.equal(info!.upstream, target);
  assert.notEqual(info!.firstByteMs, null);
  assertTimings(info!);
});

test('a tcp endpoint tunnel and a udp session end with an event each', async () => {
  const start = ended.length;
  const [host, port] = fast.address('raw').split(':');
  const socket = net.connect({ host, port: Number(port) });
  socket.write('tcp');
  assert.equal((await readBytes(socket, 3)).toString(), 'tcp');
  socket.end();
  const [tcp] = await endsAfter(start, 1);
  assert.equal(tcp!.kind, 'tcp');
  assert.deepEqual([tcp!.bytesUp, tcp!.bytesDown], [3, 3]);

  const s = dgram.createSocket('udp4');
  s.send('datagram', Number(fast.address('dgram').split(':').at(-1)), '127.0.0.1');
  await once(s, 'message');
  s.close();
  const [udp] = await endsAfter(start + 1, 1);
  assert.equal(udp!.kind, 'udp');
  assert.deepEqual([udp!.bytesUp, udp!.bytesDown], [8, 8]);
  assert.equal(udp!.upstream, `127.0.0.1:${udpEcho.address().port}`);
});

test('a refused upstream: the event carries the error, and DEBUG says what happened', async () => {
  const start = ended.length;
  tele.clear();
  const port = await unusedPort();
  const res = await proxyRequest(fast.address(), `http://127.0.0.1:${port}/x`);
  assert.equal(res.status, 502);
  const [info] = await endsAfter(start, 1);
  assert.equal(info!.status, 502);
  assert.equal(info!.upstream, null);
  assert.equal(info!.connectMs, null);
  assert.equal(info!.closeReason, 'OXY_ERR_CONNECT_REFUSED');
  assert.equal(info!.error?.code, 'OXY_ERR_CONNECT_REFUSED');
  const lines = tele.logs.filter((l) => l.msg === 'request failed');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.level, 'DEBUG');
  assert.equal(lines[0]!.fields.close_reason, 'OXY_ERR_CONNECT_REFUSED');
  assert.equal(lines[0]!.fields.status, 502);
  assert.match(String(lines[0]!.fields.request_id), /^r-/);
});

test('blocks: the event gives the reason, and DEBUG names who blocked', async () => {
  const start = ended.length;
  tele.clear();
  const denied = await connectTunnel(hooked.address(), 'denied.localhost:443');
  assert.equal(denied.status, 403);
  denied.socket.destroy();
  const blocked = await proxyRequest(hooked.address(), 'http://blocked.localhost:1/x');
  assert.equal(blocked.status, 403);
  const [a, b] = await endsAfter(start, 2);
  assert.deepEqual([a!.kind, a!.status, a!.closeReason], ['connect', 403, 'blocked']);
  assert.deepEqual(a!.error, { code: 'blocked', message: 'no denied.*' });
  assert.deepEqual([b!.kind, b!.status, b!.closeReason], ['forward', 403, 'OXY_ERR_EGRESS_BLOCKED']);
  assert.equal(b!.error?.message, 'no blocked.*');
  const lines = tele.logs.filter((l) => l.msg === 'request failed').map((l) => l.fields);
  assert.deepEqual(
    lines.map((f) => [f.blocked_by, f.err]),
    [
      ['connect', 'no denied.*'],
      ['egress', 'no blocked.*'],
    ],
  );
});

test('the node:http path: handleResponse sees the upstream, new then reused', async () => {
  const start = ended.length;
  atResponse.length = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await proxyRequest(hooked.address(), `http://127.0.0.1:${upstream.port}/x`, { agent });
      assert.equal(res.text, 'hello');
    }
  } finally {
    agent.destroy();
  }
  const up = `127.0.0.1:${upstream.port}`;
  assert.deepEqual(atResponse, [
    { upstream: up, reused: false },
    { upstream: up, reused: true },
  ]);
  const infos = await endsAfter(start, 2);
  assert.deepEqual(
    infos.map((i) => [i.upstream, i.upstreamReused, i.status]),
    [
      [up, false, 200],
      [up, true, 200],
    ],
  );
  for (const i of infos) assertTimings(i);
});

test('a throwing handleRequestEnd is logged and counted; the request is unaffected', async () => {
  tele.clear();
  const res = await proxyRequest(hooked.address(), 'http://throw.localhost:1/x');
  assert.equal(res.status, 502);
  const deadline = Date.now() + 5000;
  while (!tele.logs.some((l) => l.msg === 'app hook failed')) {
    assert.ok(Date.now() < deadline, 'the failure is logged');
    await new Promise((r) => setTimeout(r, 5));
  }
  const failure = tele.logs.find((l) => l.msg === 'app hook failed');
  assert.equal(failure?.fields.hook, 'HttpRequestHook.handleRequestEnd');
  const again = await proxyRequest(hooked.address(), `http://127.0.0.1:${upstream.port}/x`);
  assert.equal(again.status, 200);
});
