/**
 * An intercepted tunnel costs one TLS handshake with the origin: the verified connection that
 * proved the origin before the client's handshake is handed to the endpoint's pool, under the
 * key the tunnel's requests use, instead of being closed while the pool opens a second one.
 * A tunnel that finds a connection of that key idle (verified for the same name under the
 * same trust) skips the handshake: the idle connection carries its first request. When the
 * pool holds one for the CONNECT host before the tunnel is answered, the tunnel makes no TCP
 * connection of its own at all (the `lateTunnelConnect` fast path); it connects only if its
 * bytes turn out to need one (not TLS, another SNI), and a failure then is answered inside.
 * Counted at a real HTTPS origin (TCP connections and TLS handshakes), with curl as the client
 * trusting only the interception CA; with a shared pool and with a per-client pool (an egress
 * hook makes the key carry the client connection's id). An egress hook that decides where
 * connections go keeps the old way (the tunnel's connection is not handed over): a request's
 * own decision may send it elsewhere. An origin that chooses h2 in ALPN: the verifying
 * connection becomes the HTTP/2 upstream's session, so again one handshake.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { EgressDecision } from '../src/index.ts';
import {
  type AppUnderTest,
  connectTunnel,
  curl,
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  startApp,
  waitForClose,
  waitUntil,
} from '../src/testing/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-intercept-reuse-'));
const originCa = await generateCertificateAuthority('Origin CA');
const originCert = await generateCertificate({
  dnsNames: ['localhost'],
  ips: ['127.0.0.1'],
  issuer: originCa,
});
const originCaFile = join(dir, 'origin-ca.pem');
writeFileSync(originCaFile, originCa.certPem);

/** The origin: counts TCP connections and finished TLS handshakes. */
const counts = { tcp: 0, tls: 0 };
const origin = https.createServer({ cert: originCert.certPem, key: originCert.keyPem }, (req, res) =>
  res.end(`origin saw ${req.url}`),
);
const sockets: net.Socket[] = [];
origin.on('connection', (socket: net.Socket) => {
  counts.tcp++;
  sockets.push(socket);
});
origin.on('secureConnection', () => counts.tls++);
origin.listen(0, '127.0.0.1');
await once(origin, 'listening');
const port = (origin.address() as net.AddressInfo).port;

const settings = (name: string) => ({
  interception: { enabled: true, hosts: [], ca: { cert: '', key: '', dir: join(dir, name) } },
  egress: { tls: { extra_ca: [originCaFile] } },
});

const apps: AppUnderTest[] = [];

/** A new proxy per test, so no test finds a connection another one left in a pool. */
async function proxy(name: string, hooks: Parameters<typeof hooksApp>[0] = {}): Promise<AppUnderTest> {
  const app = await startApp(hooksApp(hooks), { settings: settings(name) });
  apps.push(app);
  return app;
}

/** An h2-only origin, counted the same way. */
const h2Counts = { tcp: 0, tls: 0 };
const h2Origin = http2.createSecureServer(
  { cert: originCert.certPem, key: originCert.keyPem, allowHTTP1: false },
  (req, res) => res.end(`h2 origin saw ${req.url}`),
);
h2Origin.on('connection', () => h2Counts.tcp++);
h2Origin.on('secureConnection', () => h2Counts.tls++);
h2Origin.listen(0, '127.0.0.1');
await once(h2Origin, 'listening');
const h2Port = (h2Origin.address() as net.AddressInfo).port;

after(async () => {
  await Promise.all(apps.map((a) => a.stop()));
  origin.close();
  h2Origin.close();
  rmSync(dir, { recursive: true, force: true });
});

/** One tunnel through `proxy` with `paths.length` requests inside; returns the origin's counts it caused. */
async function tunnel(proxy: AppUnderTest, ...paths: string[]): Promise<{ tcp: number; tls: number }> {
  const caFile = join(dir, `ca-${proxy.address().replace(/\W/g, '_')}.pem`);
  writeFileSync(caFile, proxy.proxy.runtime.interception?.ca.certPem ?? '');
  const start = { ...counts };
  const urls = paths.map((p) => `https://localhost:${port}${p}`);
  const r = await curl(['-x', `http://${proxy.address()}`, '--cacert', caFile, '--http1.1', ...urls]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, paths.map((p) => `origin saw ${p}`).join(''));
  return { tcp: counts.tcp - start.tcp, tls: counts.tls - start.tls };
}

describe('the verifying origin connection goes to the pool', () => {
  test('a tunnel with one request: one TCP connection and one TLS handshake at the origin', async () => {
    assert.deepEqual(await tunnel(await proxy('one'), '/one'), { tcp: 1, tls: 1 });
  });

  test('three requests in a tunnel use that one connection', async () => {
    assert.deepEqual(await tunnel(await proxy('three'), '/a', '/b', '/c'), { tcp: 1, tls: 1 });
  });

  test('a second tunnel finds the first one idle: no connection of its own, no second handshake', async () => {
    const app = await proxy('second');
    const first = sockets.length;
    assert.deepEqual(await tunnel(app, '/1'), { tcp: 1, tls: 1 });
    // The idle connection proves the origin for this name: the tunnel is answered without one.
    assert.deepEqual(await tunnel(app, '/2'), { tcp: 0, tls: 0 });
    const open = async () => {
      for (let i = 0; i < 50; i++) {
        const n = sockets.slice(first).filter((x) => !x.destroyed).length;
        if (n <= 1) return n;
        await new Promise((r) => setTimeout(r, 20));
      }
      return -1;
    };
    assert.equal(await open(), 1);
  });

  test('a per-client pool (handleUpstreamIps installed): still one connection', async () => {
    // The default decision still holds, but pool keys carry the client connection's id.
    const app = await proxy('per-client', { egress: { handleUpstreamIps: (ips) => ips } });
    assert.deepEqual(await tunnel(app, '/p'), { tcp: 1, tls: 1 });
  });

  test('handleConnection installed: the request decides anew, the tunnel connection is closed', async () => {
    const app = await proxy('deciding', {
      egress: { handleConnection: (target) => EgressDecision.direct(target) },
    });
    assert.deepEqual(await tunnel(app, '/d'), { tcp: 2, tls: 2 });
  });
});

test('an origin that chooses h2: the verifying connection carries the requests as an HTTP/2 session', async () => {
  const app = await proxy('h2');
  const caFile = join(dir, 'ca-h2.pem');
  writeFileSync(caFile, app.proxy.runtime.interception?.ca.certPem ?? '');
  const urls = ['/x', '/y'].map((p) => `https://localhost:${h2Port}${p}`);
  const r = await curl(['-x', `http://${app.address()}`, '--cacert', caFile, '--http1.1', ...urls]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'h2 origin saw /xh2 origin saw /y');
  assert.deepEqual(h2Counts, { tcp: 1, tls: 1 });
});

describe('a tunnel the pool serves is answered before it connects', () => {
  test('bytes that are not TLS: it connects then and passes them through', async () => {
    const app = await proxy('late-pass');
    assert.deepEqual(await tunnel(app, '/warm'), { tcp: 1, tls: 1 });
    const before = { ...counts };
    const t = await connectTunnel(app.address(), `localhost:${port}`);
    assert.equal(t.status, 200);
    assert.equal(counts.tcp, before.tcp, 'answered without a connection of its own');
    t.socket.on('error', () => {});
    t.socket.write('not a TLS record\r\n');
    // The origin gets the bytes over a connection made now, answers them as garbage, closes.
    await waitUntil(() => counts.tcp === before.tcp + 1, 'the late connection', 5000);
    await waitForClose(t.socket);
    // The warm-up's request and tunnel, then this tunnel's record.
    const records = await app.waitForAudit(3);
    const rec = records.find((r) => r.decisions?.includes('tunnel:passThrough'));
    assert.ok(rec, JSON.stringify(records));
    assert.match(String(rec.upstream), /^127\.0\.0\.1:\d+$/);
  });

  test('another SNI after the origin stopped listening: a 502 inside the client TLS, recorded', async () => {
    const app = await proxy('late-fail');
    // An origin whose listener closes while the pool's idle connection to it stays open.
    const server = https.createServer({ cert: originCert.certPem, key: originCert.keyPem }, (_q, s) =>
      s.end('late origin'),
    );
    const listener = net.createServer((s) => server.emit('connection', s));
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const latePort = (listener.address() as net.AddressInfo).port;
    const caFile = join(dir, 'ca-late-fail.pem');
    writeFileSync(caFile, app.proxy.runtime.interception?.ca.certPem ?? '');
    const warm = await curl([
      '-x',
      `http://${app.address()}`,
      '--cacert',
      caFile,
      `https://localhost:${latePort}/`,
    ]);
    assert.equal(warm.stdout, 'late origin', warm.stderr);
    // Stops listening now; its callback would wait for the pool's connection to end.
    listener.close();

    const t = await connectTunnel(app.address(), `localhost:${latePort}`);
    assert.equal(t.status, 200, 'the pool proved the origin: answered before any connect');
    // The pool has nothing verified for this name: the tunnel needs its own connection, which
    // is refused; the client hears why inside its TLS.
    const client = tls.connect({
      socket: t.socket,
      servername: 'other.test',
      ca: app.proxy.runtime.interception?.ca.certPem,
    });
    await once(client, 'secureConnect');
    client.end('GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n');
    let answer = '';
    for await (const chunk of client) answer += String(chunk);
    assert.match(answer, /^HTTP\/1\.1 502 /);
    await waitUntil(() => app.auditRecords().length >= 3, 'the failed tunnel record', 5000);
    const rec = app.auditRecords().find((r) => r.close_reason === 'OXY_ERR_CONNECT_REFUSED');
    assert.ok(rec, JSON.stringify(app.auditRecords()));
    assert.deepEqual(rec.decisions, ['egress:direct', 'tunnel:intercept']);
    server.close();
  });
});

describe('TLS 1.3 session tickets to intercepted clients', () => {
  /** Tickets a client gets in one intercepted tunnel through `app`, with one request inside. */
  async function ticketsThrough(app: AppUnderTest): Promise<number> {
    const t = await connectTunnel(app.address(), `localhost:${port}`);
    assert.equal(t.status, 200);
    const client = tls.connect({
      socket: t.socket,
      servername: 'localhost',
      ca: app.proxy.runtime.interception?.ca.certPem,
      minVersion: 'TLSv1.3',
    });
    let tickets = 0;
    client.on('session', () => tickets++);
    await once(client, 'secureConnect');
    client.end('GET /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    let answer = '';
    for await (const chunk of client) answer += String(chunk);
    assert.match(answer, /origin saw \/t$/);
    return tickets;
  }

  test('none by default; interception.session_tickets sends that many', async () => {
    assert.equal(await ticketsThrough(await proxy('tickets-default')), 0);
    const app = await startApp(hooksApp({}), {
      settings: {
        ...settings('tickets-two'),
        interception: { ...settings('tickets-two').interception, session_tickets: 2 },
      },
    });
    apps.push(app);
    assert.equal(await ticketsThrough(app), 2);
  });
});
