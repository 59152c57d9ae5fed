/**
 * TLS on an `http` endpoint: a certificate generated at test time, one port serving HTTP/2
 * (ALPN `h2`) and HTTP/1.1 (ALPN `http/1.1`, or no ALPN), CONNECT and forwarding over both,
 * curl as an HTTPS-proxy client, failed handshakes that cost only their own connection, and
 * start-up errors that name the settings key of a bad certificate or key file.
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
import { isOxyError } from '../src/errors.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { loadSecureContext } from '../src/onramps/tls/credentials.ts';
import {
  curl,
  generateCertificate,
  type HttpUpstream,
  hooksApp,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  type TcpPeer,
} from '../src/testing/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-tls-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const cert = await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
const other = await generateCertificate();
const files = {
  cert: join(dir, 'cert.pem'),
  key: join(dir, 'key.pem'),
  ca: join(dir, 'ca.pem'),
  otherKey: join(dir, 'other-key.pem'),
  garbage: join(dir, 'garbage.pem'),
};
writeFileSync(files.cert, cert.certPem);
writeFileSync(files.key, cert.keyPem);
writeFileSync(files.ca, cert.caPem);
writeFileSync(files.otherKey, other.keyPem);
writeFileSync(files.garbage, 'not a certificate\n');

const echo: TcpPeer = await startTcpEcho();
const upstream: HttpUpstream = await startHttpUpstream({ 'GET /hello': { body: 'hello over tls' } });
const proxy = await startApp(hooksApp(), {
  settings: {
    endpoints: {
      main: { tls: { enabled: true, cert: files.cert, key: files.key, handshake_timeout: '1s' } },
    },
  },
});
const { port } = proxy.proxy.address();
const slowIngress = await startApp(
  hooksApp({
    ingress: { handleConnection: () => new Promise((r) => setTimeout(() => r(IngressDecision.allow()), 20)) },
  }),
  { settings: { endpoints: { main: { tls: { enabled: true, cert: files.cert, key: files.key } } } } },
);
// Stopped together: each app's leak check also follows what the other opened while it ran.
after(async () => {
  await Promise.all([echo.close(), upstream.close()]);
  await Promise.all([proxy.stop(), slowIngress.stop()]);
});

function h2Session(): http2.ClientHttp2Session {
  const s = http2.connect(`https://127.0.0.1:${port}`, { ca: cert.caPem });
  s.on('error', () => {});
  after(() => s.destroy());
  return s;
}

function tlsConnect(alpn: string[] | undefined): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: cert.caPem,
      ALPNProtocols: alpn,
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
    after(() => s.destroy());
  });
}

/** Reads a response head without consuming what follows it (the tunnel's first bytes). */
async function readHead(s: tls.TLSSocket): Promise<string> {
  let text = '';
  while (!text.includes('\r\n\r\n')) {
    const [chunk] = (await once(s, 'data')) as [Buffer];
    text += chunk.toString('latin1');
  }
  s.pause();
  const end = text.indexOf('\r\n\r\n') + 4;
  if (end < text.length) s.unshift(Buffer.from(text.slice(end), 'latin1'));
  return text.slice(0, end);
}

async function stillServes(): Promise<void> {
  const r = await curl([
    '--proxy',
    `https://localhost:${port}`,
    '--proxy-cacert',
    files.ca,
    `${upstream.origin}/hello`,
  ]);
  assert.equal(r.stdout, 'hello over tls', r.stderr);
}

describe('TLS endpoint, ALPN h2', () => {
  test('the session is HTTP/2 over TLS and advertises extended CONNECT', async () => {
    const s = h2Session();
    await once(s, 'remoteSettings');
    assert.equal(s.alpnProtocol, 'h2');
    assert.equal(s.encrypted, true);
    assert.equal(s.remoteSettings.enableConnectProtocol, true);
  });

  test('CONNECT streams tunnel over TLS', async () => {
    const s = h2Session();
    const streams = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const st = s.request({ ':method': 'CONNECT', ':authority': echo.authority }, { endStream: false });
        const [h] = (await once(st, 'response')) as [http2.IncomingHttpHeaders];
        assert.equal(h[':status'], 200);
        st.end(`tls tunnel ${i}`);
        return (await readBytes(st, 12)).toString();
      }),
    );
    assert.deepEqual(streams, ['tls tunnel 0', 'tls tunnel 1', 'tls tunnel 2']);
  });

  test('a regular GET is forwarded', async () => {
    const s = h2Session();
    const req = s.request({
      ':method': 'GET',
      ':scheme': 'http',
      ':authority': upstream.authority,
      ':path': '/hello',
    });
    const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    let body = '';
    for await (const c of req) body += c;
    assert.equal(h[':status'], 200);
    assert.equal(body, 'hello over tls');
  });

  test('curl negotiates h2 through ALPN (its :scheme https request is forwarded: 502 here)', async () => {
    const r = await curl([
      '--http2',
      '--cacert',
      files.ca,
      '-H',
      `Host: ${upstream.authority}`,
      '-w',
      ' %{http_version}',
      `https://localhost:${port}/hello`,
    ]);
    // curl asks the proxy as an origin (`:scheme https`, `:authority` the upstream), which is
    // forwarded over TLS: the cleartext upstream fails the handshake (502). The point is the
    // protocol curl and the endpoint agreed on.
    assert.match(r.stdout, /^502 .* 2$/s, r.stderr);
  });
});

describe('TLS endpoint, HTTP/1.1 on the same port', () => {
  test('ALPN http/1.1: CONNECT tunnels', async () => {
    const s = await tlsConnect(['http/1.1']);
    assert.equal(s.alpnProtocol, 'http/1.1');
    s.write(`CONNECT ${echo.authority} HTTP/1.1\r\nHost: ${echo.authority}\r\n\r\n`);
    assert.match(await readHead(s), /^HTTP\/1\.1 200/);
    s.write('ping');
    const echoed = readBytes(s, 4);
    s.resume();
    assert.equal((await echoed).toString(), 'ping');
  });

  test('no ALPN at all: served as HTTP/1.1', async () => {
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: cert.caPem,
          path: `${upstream.origin}/hello`,
          headers: { host: upstream.authority },
        },
        (r) => {
          let body = '';
          r.on('data', (c) => (body += c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual(res, { status: 200, body: 'hello over tls' });
  });

  test('curl as an HTTPS-proxy client (CONNECT and absolute-form over TLS)', async () => {
    await stillServes();
  });
});

describe('TLS failures cost only their own connection', () => {
  test('cleartext bytes on the TLS port: closed, next client served', async () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await once(s, 'connect');
    s.write(`GET ${upstream.origin}/hello HTTP/1.1\r\nHost: x\r\n\r\n`);
    await once(s, 'close');
    await stillServes();
  });

  test('a client offering only an unknown ALPN protocol is refused', async () => {
    await assert.rejects(tlsConnect(['spdy/3']), /no application protocol|ALPN|alert/i);
    await stillServes();
  });

  test('a client that never finishes the handshake is closed after handshake_timeout', async () => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await once(s, 'connect');
    const t0 = performance.now();
    await once(s, 'close');
    const elapsed = performance.now() - t0;
    assert.ok(elapsed > 800 && elapsed < 5000, `closed after ${elapsed} ms`);
  });

  test('an untrusted client certificate check is not required (no client auth)', async () => {
    const s = await tlsConnect(['h2']);
    assert.equal(s.alpnProtocol, 'h2');
  });
});

describe('certificate and key files', () => {
  const settings = (over: Record<string, string>) => ({
    enabled: true,
    cert: files.cert,
    key: files.key,
    min_version: 'TLSv1.2' as const,
    client_auth: 'none' as const,
    client_ca: '',
    handshake_timeout: 1000,
    ...over,
  });
  const cases: [string, Record<string, string>, RegExp][] = [
    ['no cert set', { cert: '' }, /^endpoints\.main\.tls\.cert: a file is required/],
    [
      'a missing cert file',
      { cert: join(dir, 'nope.pem') },
      /^endpoints\.main\.tls\.cert: cannot read .*ENOENT/,
    ],
    [
      'a cert file that is not PEM',
      { cert: files.garbage },
      /^endpoints\.main\.tls\.cert: .* does not hold a PEM certificate/,
    ],
    [
      'a key file that is not PEM',
      { key: files.garbage },
      /^endpoints\.main\.tls\.key: .* does not hold an unencrypted PEM private key/,
    ],
    [
      'a key of another certificate',
      { key: files.otherKey },
      /^endpoints\.main\.tls\.key: .* does not match the certificate/,
    ],
  ];
  for (const [name, over, message] of cases) {
    test(`${name}: a start-up error naming the key`, () => {
      assert.throws(
        () => loadSecureContext(settings(over), 'endpoints.main.tls'),
        (e: unknown) => isOxyError(e) && message.test(e.message),
      );
    });
  }

  test('the proxy refuses to start with a bad key, naming the settings path', async () => {
    await assert.rejects(
      startApp(hooksApp(), {
        settings: {
          endpoints: {
            main: { addr: '127.0.0.1:0', tls: { enabled: true, cert: files.cert, key: files.otherKey } },
          },
        },
      }),
      /endpoints\.main\.tls\.key/,
    );
  });
});

test('behind an async IngressHook.handleConnection, the handshake and both protocols still work', async () => {
  const s = http2.connect(`https://127.0.0.1:${slowIngress.proxy.address().port}`, { ca: cert.caPem });
  s.on('error', () => {});
  after(() => s.destroy());
  const st = s.request({ ':method': 'CONNECT', ':authority': echo.authority }, { endStream: false });
  const [h] = (await once(st, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(h[':status'], 200);
  st.end('hooked');
  assert.equal((await readBytes(st, 6)).toString(), 'hooked');
  const r = await curl([
    '--proxy',
    `https://localhost:${slowIngress.proxy.address().port}`,
    '--proxy-cacert',
    files.ca,
    `${upstream.origin}/hello`,
  ]);
  assert.equal(r.stdout, 'hello over tls', r.stderr);
});
