/**
 * CONNECT-UDP (RFC 9298) served by a real Oxy `http` endpoint through the datagram runner:
 * the project's client (`oxy/masque`) over HTTP/2 and HTTP/1.1 to a UDP echo, the python-h2
 * client resolving a name with the test DNS server, and the refusals with their status and
 * `Proxy-Status`: a blocked target (403, before any datagram reaches it), a path that does not
 * match the template (400), an unresolvable name (502 `dns_error`), CONNECT-IP without an
 * address pool (501; a DNS-name scope is in masque-connect-ip-dns.test.ts). The
 * audit records are `udp_session` records of `connect-udp` requests, with datagram counts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http2 from 'node:http2';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { AuditRecord } from '../src/audit.ts';
import { isOxyError } from '../src/errors.ts';
import { ConnectDirective } from '../src/hooks/http-request.ts';
import { createMasqueClient, MasqueRefusedError } from '../src/masque/client.ts';
import { encodeDatagramCapsule } from '../src/protocols/capsule/codec.ts';
import { type AppUnderTest, hooksApp, startApp, startDnsServer, waitUntil } from '../src/testing/index.ts';

const run = promisify(execFile);
const SCRIPT = path.join(import.meta.dirname, 'fixtures', 'masque-h2-client.py');
// The Debian interpreter, where python3-h2 is installed (a pyenv python3 on PATH may lack it).
const PYTHON = '/usr/bin/python3';
const UDP_PATH = '/.well-known/masque/udp';

const dns = await startDnsServer({ records: { 'www.example.test': { A: ['192.0.2.44', '192.0.2.45'] } } });
let echo: dgram.Socket;
let echoPort: number;
/** Datagrams the echo received, to show a refused tunnel sent none. */
let echoed = 0;
let oxy: AppUnderTest;
let blocking: AppUnderTest;
/** Refuses targets on port 9 with the request hook; tunnels idle out after 300 ms. */
let hooked: AppUnderTest;

before(async () => {
  echo = dgram.createSocket('udp4');
  echo.on('message', (msg, from) => {
    echoed++;
    echo.send(msg, from.port, from.address);
  });
  echo.bind(0, '127.0.0.1');
  await once(echo, 'listening');
  echoPort = echo.address().port;
  oxy = await startApp(hooksApp({}), {
    settings: { egress: { dns: { nameservers: [dns.address] } } },
  });
  blocking = await startApp(hooksApp({}), {
    settings: { egress: { blocked_cidrs: ['127.0.0.0/8', '::1/128'] } },
  });
  hooked = await startApp(
    hooksApp({
      httpRequest: {
        handleProxyConnectRequest: (_head, ctx) =>
          ctx.target.port === 9
            ? ConnectDirective.block(407, 'no tunnels to port 9')
            : ConnectDirective.allow(),
      },
    }),
    { settings: { endpoints: { main: { tunnel_idle_timeout: '300ms' } } } },
  );
});

after(async () => {
  // In reverse order: each app's leak check counts what was opened after it started.
  await hooked.stop();
  await blocking.stop();
  await oxy.stop();
  echo.close();
  await dns.close();
});

const proxyOf = (app: AppUnderTest) => `http://${app.address()}`;

async function recordFor(app: AppUnderTest, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => app.auditRecords().some(match), 'the audit record');
  return app.auditRecords().find(match) as AuditRecord;
}

async function refusal(p: Promise<unknown>): Promise<MasqueRefusedError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof MasqueRefusedError, `expected a refusal, got ${String(e)}`);
    return e;
  }
  assert.fail('the proxy accepted the tunnel');
}

test('10,000 datagrams over CONNECT-UDP over HTTP/2, none lost, counted in the audit record', async () => {
  const client = createMasqueClient({ proxy: proxyOf(oxy) });
  const tunnel = await client.connectUdp('127.0.0.1', echoPort);
  assert.equal(tunnel.status, 200);
  const total = 10_000;
  const window = 64;
  const seen = new Uint8Array(total);
  let sent = 0;
  let received = 0;
  const send = () => {
    const payload = new Uint8Array(100);
    new DataView(payload.buffer).setUint32(0, sent++);
    tunnel.send(payload);
  };
  for (let i = 0; i < window; i++) send();
  const timer = setTimeout(() => void tunnel.close(0), 30_000);
  for await (const d of tunnel) {
    const n = new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0);
    if (seen[n] === 0) {
      seen[n] = 1;
      received++;
    }
    if (received === total) break;
    if (sent < total) send();
  }
  clearTimeout(timer);
  assert.equal(received, total);
  await client.close();
  const rec = await recordFor(
    oxy,
    (r) => r.kind === 'udp_session' && r.target === `127.0.0.1:${echoPort}` && r.datagrams_up === total,
  );
  assert.equal(rec.datagrams_down, total);
  assert.equal(rec.status, 200);
  assert.equal(rec.close_reason, 'client_closed');
  assert.equal(rec.request_kind, 'connect-udp');
});

test('CONNECT-UDP over HTTP/1.1 Upgrade', async () => {
  const client = createMasqueClient({ proxy: proxyOf(oxy), httpVersion: '1.1' });
  try {
    const tunnel = await client.connectUdp('127.0.0.1', echoPort);
    assert.equal(tunnel.status, 101);
    for (const word of ['one', 'two', 'three']) {
      tunnel.send(Buffer.from(word));
      for await (const d of tunnel) {
        assert.equal(Buffer.from(d).toString(), word);
        break;
      }
    }
  } finally {
    await client.close();
  }
});

test('DNS over CONNECT-UDP with the python-h2 client', async () => {
  const { stdout } = await run(
    PYTHON,
    [
      SCRIPT,
      '--port',
      oxy.address().split(':').at(-1) as string,
      '--target-host',
      '127.0.0.1',
      '--target-port',
      String(dns.port),
      '--name',
      'www.example.test',
      '--count',
      '2',
    ],
    { timeout: 15_000 },
  );
  const r = JSON.parse(stdout) as {
    status: number;
    capsule_protocol: string | null;
    answers: { id: number; rcode: number; addresses: string[] }[];
  };
  assert.equal(r.status, 200);
  assert.equal(r.capsule_protocol, '?1');
  assert.deepEqual(
    r.answers.map((a) => [a.rcode, a.addresses.sort()]),
    [
      [0, ['192.0.2.44', '192.0.2.45']],
      [0, ['192.0.2.44', '192.0.2.45']],
    ],
  );
});

test('a blocked target gets 403 with Proxy-Status, and no datagram sent early reaches it', async () => {
  const before = echoed;
  const session = http2.connect(proxyOf(blocking));
  session.on('error', () => {});
  try {
    await once(session, 'remoteSettings');
    const stream = session.request(
      {
        ':method': 'CONNECT',
        ':protocol': 'connect-udp',
        ':scheme': 'http',
        ':authority': blocking.address(),
        ':path': `${UDP_PATH}/127.0.0.1/${echoPort}/`,
        'capsule-protocol': '?1',
      },
      { endStream: false },
    );
    stream.on('error', () => {});
    // Optimistic datagrams, sent before the answer (RFC 9298 allows it): none may get through.
    stream.write(encodeDatagramCapsule(Buffer.from('early')));
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 403);
    assert.match(
      String(headers['proxy-status']),
      new RegExp(`^oxy; error=destination_ip_prohibited; next-hop="127\\.0\\.0\\.1:${echoPort}"`),
    );
    stream.destroy();
  } finally {
    session.destroy();
  }
  const rec = await recordFor(blocking, (r) => r.kind === 'udp_session' && r.status === 403);
  assert.equal(rec.datagrams_up, 0);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(echoed, before, 'the echo received a datagram of a refused tunnel');
});

test('a path that does not match the template gets 400', async () => {
  const client = createMasqueClient({
    proxy: proxyOf(oxy),
    udpTemplate: '/masque/{target_host}/{target_port}/',
  });
  try {
    const e = await refusal(client.connectUdp('127.0.0.1', echoPort));
    assert.equal(e.status, 400);
    assert.equal(e.proxyStatus[0]?.error, 'http_request_error');
  } finally {
    await client.close();
  }
});

test('an unresolvable name gets 502 with dns_error', async () => {
  const client = createMasqueClient({ proxy: proxyOf(oxy) });
  try {
    const e = await refusal(client.connectUdp('nowhere.example.test', 53));
    assert.equal(e.status, 502);
    assert.equal(e.proxyStatus[0]?.error, 'dns_error');
  } finally {
    await client.close();
  }
});

test('CONNECT-IP is answered 501 without an address pool', async () => {
  const nopool = await startApp(hooksApp({}), {
    settings: { endpoints: { main: { masque: { ip_pool: { ipv4: '', ipv6: '' } } } } },
  });
  const client = createMasqueClient({ proxy: proxyOf(nopool) });
  try {
    const e = await refusal(client.connectIp());
    assert.equal(e.status, 501);
    assert.match(e.proxyStatus[0]?.details ?? '', /not served on this endpoint/);
    // The request's checks come first: a DNS-name scope is refused the same way, unresolved.
    const d = await refusal(client.connectIp({ target: 'www.example.test' }));
    assert.equal(d.status, 501);
  } finally {
    await client.close();
    await nopool.stop();
  }
});

test('a bad template is a start-up error naming its key', async () => {
  await assert.rejects(
    startApp(hooksApp({}), {
      settings: { endpoints: { main: { masque: { udp_template: '/udp/{target_host}/' } } } },
    }),
    (e: unknown) => isOxyError(e) && /endpoints\.main\.masque\.udp_template/.test(e.message),
  );
});

test('the CONNECT request hook sees CONNECT-UDP requests; its block is answered with its status', async () => {
  const client = createMasqueClient({ proxy: proxyOf(hooked) });
  try {
    const e = await refusal(client.connectUdp('127.0.0.1', 9));
    assert.equal(e.status, 407);
    assert.equal(e.proxyStatus[0]?.error, 'http_request_denied');
    const rec = await recordFor(hooked, (r) => r.request_kind === 'connect-udp' && r.status === 407);
    assert.deepEqual(rec.decisions, ['connect:block']);
  } finally {
    await client.close();
  }
});

test('a tunnel with no datagram for tunnel_idle_timeout ends, and its stream is closed', async () => {
  const client = createMasqueClient({ proxy: proxyOf(hooked) });
  try {
    const tunnel = await client.connectUdp('127.0.0.1', echoPort);
    tunnel.send(Buffer.from('once'));
    const started = performance.now();
    await tunnel.whenClosed;
    assert.ok(performance.now() - started >= 250, 'closed before the idle timeout');
    const rec = await recordFor(hooked, (r) => r.request_kind === 'connect-udp' && r.status === 200);
    assert.equal(rec.close_reason, 'idle_timeout');
    assert.equal(rec.datagrams_up, 1);
    assert.equal(rec.datagrams_down, 1);
  } finally {
    await client.close();
  }
});

test('over HTTP/1.1 a blocked target gets 403 with Proxy-Status too', async () => {
  const client = createMasqueClient({ proxy: proxyOf(blocking), httpVersion: '1.1' });
  try {
    const e = await refusal(client.connectUdp('127.0.0.1', echoPort));
    assert.equal(e.status, 403);
    assert.equal(e.proxyStatus[0]?.error, 'destination_ip_prohibited');
  } finally {
    await client.close();
  }
});

test('CONNECT-UDP to the port number the proxy listens on for TCP reaches the UDP server there (not a loop)', async () => {
  // The UDP server first, on a port of its own; then a proxy listening for TCP on that number.
  // (The other way round, a UDP socket elsewhere, such as a session's upstream, may hold it.)
  let udp: dgram.Socket | null = null;
  let same: AppUnderTest | null = null;
  let client: ReturnType<typeof createMasqueClient> | null = null;
  try {
    for (let attempt = 0; same === null; attempt++) {
      const u = dgram.createSocket('udp4');
      udp = u;
      u.bind(0, '127.0.0.1');
      await once(u, 'listening');
      const addr = `127.0.0.1:${u.address().port}`;
      same = await startApp(hooksApp({}), { settings: { endpoints: { main: { addr } } } }).catch(
        (e: unknown) => {
          if (attempt >= 4) throw e;
          u.close(); // that number is taken for TCP: another one
          return null;
        },
      );
    }
    const server = udp as dgram.Socket;
    server.on('message', (msg, from) => server.send(msg, from.port, from.address));
    const port = server.address().port;
    client = createMasqueClient({ proxy: proxyOf(same) });
    const tunnel = await client.connectUdp('127.0.0.1', port);
    assert.equal(tunnel.status, 200);
    tunnel.send(Buffer.from('same port, other transport'));
    for await (const d of tunnel) {
      assert.equal(Buffer.from(d).toString(), 'same port, other transport');
      break;
    }
    await tunnel.close(0);
  } finally {
    await client?.close();
    udp?.close();
    await same?.stop();
  }
});
