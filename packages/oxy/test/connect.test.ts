/**
 * CONNECT tunnels through the HTTP/1.1 endpoint: curl over a tunnel (`-p -x`), bytes and FIN
 * both ways, the default `blocked_cidrs` (403, also for a name that resolves to loopback),
 * refused (502 with a reason), connect timeout (504), idle timeout, and the audit record.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, test } from 'node:test';
import type { AuditRecord } from '../src/audit.ts';
import {
  connectTunnel,
  curl,
  hooksApp,
  rawConnect,
  readBytes,
  readUntil,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  startTcpServer,
  waitUntil,
} from '../src/testing/index.ts';

const upstream = await startHttpUpstream({ '/hello': { body: 'hello through a tunnel' } });
const echo = await startTcpEcho();
const proxy = await startApp(hooksApp(), {
  settings: {
    endpoints: { main: { tunnel_idle_timeout: '300ms' } },
    egress: { connect_timeout: '300ms' },
  },
});
const blocking = await startApp(hooksApp(), {
  settings: { egress: { blocked_cidrs: ['127.0.0.0/8', '::1/128'] } },
});
// Stopped together: the first one's leak check also follows what the second one opened.
after(async () => {
  await Promise.all([upstream.close(), echo.close()]);
  await Promise.all([proxy.stop(), blocking.stop()]);
});
const proxyUrl = `http://${proxy.address()}`;

test('curl tunnels through CONNECT (-p -x)', async () => {
  const r = await curl(['-p', '-x', proxyUrl, `${upstream.origin}/hello`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello through a tunnel');
});

test('bytes flow both ways and a half-close is carried across', async () => {
  const t = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.write('ping');
  assert.equal((await readBytes(t.socket, 4)).toString(), 'ping');
  t.socket.end('after-fin'); // the echo peer answers FIN with FIN after echoing
  const rest = await readBytes(t.socket, 9);
  assert.equal(rest.toString(), 'after-fin');
  await once(t.socket, 'close');
});

test('loopback is blocked by blocked_cidrs with 403, also behind the name localhost', async () => {
  for (const target of [echo.authority, `localhost:${echo.port}`]) {
    const t = await connectTunnel(blocking.address(), target);
    assert.equal(t.status, 403, target);
    t.socket.destroy();
  }
  // The proxy still serves a request it may serve.
  const r = await curl([
    '-x',
    `http://${blocking.address()}`,
    '-s',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    'http://127.0.0.1:1/',
  ]);
  assert.equal(r.stdout, '403');
});

test('a refused port is 502 with a short reason in the body', async () => {
  const t = await connectTunnel(proxy.address(), '127.0.0.1:1');
  assert.equal(t.status, 502);
  const body = Buffer.concat([t.head, await readBytes(t.socket, 1000, 2000)]).toString();
  assert.match(body, /refused/);
});

test('an upstream that never answers the SYN is 504 after connect_timeout', async () => {
  // A listener that never accepts, with its tiny backlog filled: later SYNs are dropped.
  // The child blocks its event loop right after listening, so nothing is ever accepted.
  const peer = spawn(process.execPath, [
    '-e',
    "const s=require('net').createServer().listen({port:0,host:'127.0.0.1',backlog:1},()=>{" +
      "process.stdout.write(s.address().port+'\\n',()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,30000))})",
  ]);
  after(() => peer.kill());
  const [line] = (await once(peer.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  const fillers = [];
  for (let i = 0; i < 3; i++)
    fillers.push(await connectTunnel(proxy.address(), `127.0.0.1:${port}`).catch(() => null));
  const t0 = performance.now();
  const t = await connectTunnel(proxy.address(), `127.0.0.1:${port}`);
  for (const f of fillers) f?.socket.destroy();
  assert.equal(t.status, 504);
  assert.ok(performance.now() - t0 < 3000);
});

test('an idle tunnel is closed after tunnel_idle_timeout and audited', async () => {
  const t = await connectTunnel(proxy.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.write('x');
  await readBytes(t.socket, 1);
  t.socket.resume();
  await once(t.socket, 'close');
  // The record is written once the proxy has torn the tunnel down, a moment after the close.
  const isIdleRecord = (r: AuditRecord) => r.close_reason === 'idle_timeout' && r.target === echo.authority;
  await waitUntil(() => proxy.auditRecords().some(isIdleRecord), 'the idle tunnel audit record').catch(
    () => {},
  );
  const records = proxy.auditRecords();
  const rec = records.find(isIdleRecord);
  assert.ok(rec, JSON.stringify(records));
  assert.equal(rec.kind, 'tunnel');
  assert.equal(rec.target, echo.authority);
  assert.equal(rec.upstream, echo.authority);
  assert.equal(rec.bytes_up, 1);
  assert.equal(rec.bytes_down, 1);
  assert.equal(rec.status, 200);
  assert.deepEqual(rec.decisions, ['egress:direct']);
});

for (const source of ['127.0.0.2', '::ffff:127.0.0.2']) {
  test(`egress.source_addr: upstream connections come from the configured address (${source})`, async () => {
    const seen: string[] = [];
    const server = await startTcpServer((s) => {
      seen.push(s.remoteAddress ?? '');
      s.end();
    });
    after(() => server.close());
    const sourced = await startApp(hooksApp(), { settings: { egress: { source_addr: source } } });
    after(() => sourced.stop());
    const t = await connectTunnel(sourced.address(), server.authority);
    assert.equal(t.status, 200);
    t.socket.destroy();
    // The target accepts when the handshake's last ACK comes (`tunnel_smart_connect` holds it
    // for the client's first bytes; here the close carries it).
    await waitUntil(() => seen.length > 0, 'the target accepted');
    assert.deepEqual(seen, ['127.0.0.2'], 'an IPv4-mapped source is its IPv4 address');
  });
}

test('an IPv6 target is connected by the addon too; an IPv4 source_addr is not applied to it', async () => {
  const seen: string[] = [];
  const server = await startTcpServer((s) => {
    seen.push(s.remoteAddress ?? '');
    s.end('over v6');
  }, '::1');
  after(() => server.close());
  const sourced = await startApp(hooksApp(), { settings: { egress: { source_addr: '127.0.0.2' } } });
  after(() => sourced.stop());
  const t = await connectTunnel(sourced.address(), server.authority);
  assert.equal(t.status, 200);
  const body = Buffer.concat([t.head, await readBytes(t.socket, 7)]).toString();
  assert.equal(body, 'over v6');
  t.socket.destroy();
  assert.deepEqual(seen, ['::1']);
});

test('bytes sent right behind the CONNECT head reach the upstream', async () => {
  const s = rawConnect(
    proxy.address(),
    `CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\nearly bytes`,
  );
  const got = await readUntil(s, 'early bytes');
  assert.match(got, /^HTTP\/1\.1 200 Connection Established\r\n\r\nearly bytes$/);
  s.destroy();
});
