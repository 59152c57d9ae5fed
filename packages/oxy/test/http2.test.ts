/**
 * HTTP/2 on an `http` endpoint, cleartext with prior knowledge: CONNECT streams (RFC 9113
 * §8.5) multiplexed on one session, regular requests forwarded, extended CONNECT advertised,
 * and HTTP/1.1 still served on the same port. Real Node http2 clients and curl, real upstreams.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { after, describe, test } from 'node:test';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { HTTP2_PREFACE } from '../src/onramps/http2/preface.ts';
import {
  connectTunnelH2,
  curl,
  type HttpUpstream,
  hooksApp,
  proxyRequest,
  rawExchange,
  readBytes,
  startApp,
  startHoldOpenServer,
  startHttpUpstream,
  startTcpEcho,
  type TcpPeer,
} from '../src/testing/index.ts';

const echo: TcpPeer = await startTcpEcho();
const upstream: HttpUpstream = await startHttpUpstream({
  'GET /hello': { status: 200, headers: { 'x-up': 'yes', 'keep-alive': 'timeout=5' }, body: 'hello h2' },
  // The peer has read the body by the time a route runs: answer with what it recorded.
  'POST /echo': (_req, res) => {
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end(upstream.requests.at(-1)?.body);
  },
});
const proxy = await startApp(hooksApp());
const proxyUrl = `http://${proxy.address()}`;
const h1Only = await startApp(hooksApp(), {
  settings: { endpoints: { main: { http2: { enabled: false } } } },
});
// An async ingress hook keeps the socket paused until it answers: detection must still work.
const slowIngress = await startApp(
  hooksApp({
    ingress: { handleConnection: () => new Promise((r) => setTimeout(() => r(IngressDecision.allow()), 20)) },
  }),
);
// Stopped together: each app's leak check also follows what the others opened while it ran.
after(async () => {
  await Promise.all([echo.close(), upstream.close()]);
  await Promise.all([proxy.stop(), h1Only.stop(), slowIngress.stop()]);
});

function session(): http2.ClientHttp2Session {
  const s = http2.connect(proxyUrl);
  s.on('error', () => {});
  after(() => s.destroy());
  return s;
}

async function h2Get(
  s: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  const req = s.request(headers);
  req.on('error', () => {});
  const [res] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  let body = '';
  req.setEncoding('utf8');
  for await (const chunk of req) body += chunk;
  return { status: Number(res[':status']), headers: res, body };
}

describe('HTTP/2 cleartext (prior knowledge)', () => {
  test('advertises extended CONNECT (RFC 8441) in its SETTINGS', async () => {
    const s = session();
    await once(s, 'remoteSettings');
    assert.equal(s.remoteSettings.enableConnectProtocol, true);
  });

  test('a CONNECT stream tunnels to a TCP echo server', async () => {
    const t = await connectTunnelH2(proxy.address(), echo.authority);
    after(() => t.session.destroy());
    assert.equal(t.status, 200);
    t.stream.write('ping over h2');
    assert.equal((await readBytes(t.stream, 12)).toString(), 'ping over h2');
    t.stream.end();
    await once(t.stream, 'close');
  });

  test('100 concurrent CONNECT streams on one session each echo their own data', async () => {
    const s = session();
    const before = echo.accepted();
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const t = await connectTunnelH2(s, echo.authority);
        assert.equal(t.status, 200);
        const payload = Buffer.alloc(64 * 1024 + i, `stream-${i};`);
        t.stream.end(payload);
        const got = await readBytes(t.stream, payload.length, 15_000);
        return got.equals(payload);
      }),
    );
    assert.deepEqual(
      results.filter((ok) => !ok),
      [],
    );
    assert.equal(echo.accepted() - before, 100);
  });

  test('a regular GET is forwarded upstream over HTTP/1.1', async () => {
    const s = session();
    const r = await h2Get(s, {
      ':method': 'GET',
      ':scheme': 'http',
      ':authority': upstream.authority,
      ':path': '/hello',
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello h2');
    assert.equal(r.headers['x-up'], 'yes');
    assert.equal(r.headers['keep-alive'], undefined);
    const seen = upstream.requests.at(-1);
    assert.equal(seen?.url, '/hello');
    assert.equal(seen?.headers.host, upstream.authority);
  });

  test('a POST body streams up and the response streams back', async () => {
    const s = session();
    const req = s.request({
      ':method': 'POST',
      ':scheme': 'http',
      ':authority': upstream.authority,
      ':path': '/echo',
    });
    req.end('body through h2');
    const [res] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    let body = '';
    req.setEncoding('utf8');
    for await (const c of req) body += c;
    assert.equal(res[':status'], 201);
    assert.equal(body, 'body through h2');
  });

  test('curl --http2-prior-knowledge is forwarded', async () => {
    const r = await curl([
      '--http2-prior-knowledge',
      '-x',
      proxyUrl,
      `${upstream.origin}/hello`,
      '-w',
      ' %{http_version}',
    ]);
    // curl sends absolute-form requests to an HTTP proxy over HTTP/1.1; prior knowledge applies
    // to origin requests, so ask the proxy as an origin with the upstream's authority instead.
    assert.equal(r.code, 0, r.stderr);
    const direct = await curl([
      '--http2-prior-knowledge',
      '-H',
      `Host: ${upstream.authority}`,
      `${proxyUrl}/hello`,
      '-w',
      ' %{http_version}',
    ]);
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(direct.stdout, 'hello h2 2');
  });

  test('HTTP/1.1 is still served on the same port', async () => {
    const r = await proxyRequest(proxy.address(), `${upstream.origin}/hello`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hello h2');
  });

  test('extended CONNECT: an unknown :protocol is answered 501', async () => {
    // CONNECT-UDP and CONNECT-IP are served (test/masque-endpoint.test.ts, masque-connect-ip*.test.ts;
    // a DNS-name CONNECT-IP scope is resolved, in masque-connect-ip-dns.test.ts).
    const s = session();
    await once(s, 'remoteSettings');
    const other = await h2Get(s, {
      ':method': 'CONNECT',
      ':protocol': 'x-unknown',
      ':scheme': 'http',
      ':authority': 'localhost',
      ':path': '/',
    });
    assert.equal(other.status, 501);
  });
});

describe('behind an async IngressHook.handleConnection', () => {
  test('h2c CONNECT and HTTP/1.1 are both served once the hook allows', async () => {
    const t = await connectTunnelH2(slowIngress.address(), echo.authority);
    after(() => t.session.destroy());
    assert.equal(t.status, 200);
    t.stream.end('late but fine');
    assert.equal((await readBytes(t.stream, 13)).toString(), 'late but fine');
    const r = await proxyRequest(slowIngress.address(), `${upstream.origin}/hello`);
    assert.equal(r.text, 'hello h2');
  });
});

describe('flow control', () => {
  test('a tunnel to an upstream that never reads stalls its client instead of buffering', async () => {
    const stuck = await startHoldOpenServer();
    after(() => stuck.close());
    const t = await connectTunnelH2(proxy.address(), stuck.authority);
    after(() => t.session.destroy());
    assert.equal(t.status, 200);
    const chunk = Buffer.alloc(64 * 1024);
    let accepted = 0;
    const deadline = performance.now() + 1500;
    // Write while the stream takes more; count only bytes the HTTP/2 layer accepted (drained).
    while (performance.now() < deadline && accepted < 256 * 1024 * 1024) {
      if (!t.stream.write(chunk)) {
        const drained = await Promise.race([
          once(t.stream, 'drain').then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
        ]);
        if (!drained) break;
      }
      accepted += chunk.length;
    }
    // Bounded by the stream window (1 MiB), the pump's buffers and the kernel's socket buffers.
    assert.ok(accepted < 32 * 1024 * 1024, `the client could push ${accepted} bytes into a stuck tunnel`);
    // The session stays usable for other streams meanwhile.
    const other = await connectTunnelH2(t.session, echo.authority);
    other.stream.end('unaffected');
    assert.equal((await readBytes(other.stream, 10)).toString(), 'unaffected');
  });
});

describe('with http2.enabled: false', () => {
  test('the HTTP/2 preface is just a bad HTTP/1.1 request (400), and HTTP/1.1 is served', async () => {
    const r = await rawExchange(h1Only.address(), HTTP2_PREFACE);
    assert.match(r.text, /^HTTP\/1\.1 400/);
    const ok = await proxyRequest(h1Only.address(), `${upstream.origin}/hello`);
    assert.equal(ok.text, 'hello h2');
  });
});
