/**
 * HTTPS origins that choose HTTP/2 in ALPN (`egress.tls.http2`, `offramps/http2/`), with real
 * peers on loopback: `node:http2` secure servers with and without HTTP/1.1, an HTTP/1.1-only
 * origin, an origin whose certificate does not verify, one that limits concurrent streams, one
 * that refuses streams and one that sends GOAWAY. Checked: `https://` absolute-form requests get
 * the body (over h2 when the origin offers it, else HTTP/1.1, as the audit's
 * `upstream_protocol` says), request bodies, `100 Continue` and trailers cross, a response body
 * is paced by the client, concurrent requests share one session, the stream limit opens more
 * sessions, a refused stream is retried once, a GOAWAY'd session is replaced, an upstream reset
 * cuts the response, a client leaving, a body hook stopping the upload and the response timeout
 * reset the upstream stream (CANCEL) and leave the session up, idle sessions close, a body hook
 * rewrites a body arriving over h2, an intercepted request reaches an h2-only origin, and
 * verification failures stay 502 with the reason.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BodyFilter, BodyVerdict, defineApp } from '../src/index.ts';
import {
  type AppUnderTest,
  curl,
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  startApp,
  waitUntil,
} from '../src/testing/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-h2-upstream-'));
const originCa = await generateCertificateAuthority('Origin CA');
const originCaFile = join(dir, 'origin-ca.pem');
writeFileSync(originCaFile, originCa.certPem);
const cert = await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'], issuer: originCa });
const selfSigned = await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });

/** An HTTP/2 origin; counts its sessions and the most streams one session had open at once. */
async function startH2Origin(
  options: { allowHTTP1: boolean; selfSigned?: boolean; maxStreams?: number },
  handle?: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => boolean,
) {
  const c = options.selfSigned === true ? selfSigned : cert;
  /** `path code` of every stream the proxy reset, as received. */
  const resets: string[] = [];
  const state = { sessions: 0, closed: 0, maxOpen: 0, streams: 0, resets };
  const server = http2.createSecureServer({
    cert: c.certPem,
    key: c.keyPem,
    allowHTTP1: options.allowHTTP1,
    ...(options.maxStreams === undefined ? {} : { settings: { maxConcurrentStreams: options.maxStreams } }),
  });
  server.on('session', (session) => {
    state.sessions++;
    session.on('close', () => state.closed++);
    let open = 0;
    session.on('stream', (stream, headers) => {
      stream.on('aborted', () => resets.push(`${headers[':path']} ${stream.rstCode}`));
      open++;
      state.streams++;
      state.maxOpen = Math.max(state.maxOpen, open);
      stream.on('close', () => open--);
    });
  });
  server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    if (req.httpVersion === '2.0' && handle?.(req, res) === true) return;
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d.toString();
    });
    req.on('end', () => {
      const te = req.headers.te === undefined ? '' : ` te=${req.headers.te}`;
      res.end(
        `origin saw ${req.method} ${req.url} over ${req.httpVersion}${te}${body ? ` body=${body}` : ''}`,
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, state, port: (server.address() as net.AddressInfo).port };
}

const both = await startH2Origin({ allowHTTP1: true });
let refusedOnce = 0;
/** Bytes `/big` got accepted by its stream so far (it waits for 'drain' when told to). */
let bigWritten = 0;
const BIG = 16 * 1024 * 1024;
/** RST_STREAM codes of `/hang` streams, as the origin received them. */
const hangCodes: number[] = [];
const h2only = await startH2Origin({ allowHTTP1: false }, (req, res) => {
  const path = req.url;
  if (path === '/trailers') {
    res.addTrailers({ 'x-checksum': 'abc' });
    res.end('with trailers');
    return true;
  }
  if ((path === '/refuse-once' && refusedOnce++ === 0) || path === '/refuse-always') {
    req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    return true;
  }
  if (path === '/cut') {
    res.writeHead(200);
    res.write('partial');
    setTimeout(() => req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 20);
    return true;
  }
  if (path === '/big') {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    bigWritten = 0;
    const pump = (): void => {
      while (bigWritten < BIG) {
        bigWritten += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return true;
  }
  if (path === '/bye') {
    res.end('bye');
    req.stream.session?.close(); // GOAWAY (NO_ERROR): this session takes no new stream
    return true;
  }
  if (path === '/hang') {
    // Read when the reset arrives: the compat layer closes the stream again afterwards.
    req.stream.on('aborted', () => hangCodes.push(req.stream.rstCode ?? -1));
    return true;
  }
  if (path.startsWith('/slow')) {
    setTimeout(() => res.end('slow'), 300);
    return true;
  }
  return false;
});
const limited = await startH2Origin({ allowHTTP1: false, maxStreams: 2 }, (_req, res) => {
  setTimeout(() => res.end('limited'), 300);
  return true;
});
const untrusted = await startH2Origin({ allowHTTP1: false, selfSigned: true });
const h1only = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) =>
  res.end(`h1 origin saw ${req.url} over ${req.httpVersion}`),
);
h1only.listen(0, '127.0.0.1');
await once(h1only, 'listening');
const h1Port = (h1only.address() as net.AddressInfo).port;

const upper: BodyFilter = { rewrites: true, onChunk: (c) => c.toString('latin1').toUpperCase() };
const bodyApp = defineApp({
  name: 'h2-body',
  version: '1.0.0',
  description: 'upper-cases response bodies under /upper/',
  start: () => ({
    httpBody: {
      getRequestBodyFilter: (head) =>
        head.path.startsWith('/stop-req/')
          ? { onChunk: () => BodyVerdict.stop(451, 'upload refused') }
          : undefined,
      getResponseBodyFilter: (_res, ctx) =>
        (ctx.ext as { path?: string }).path?.startsWith('/upper/') ? upper : undefined,
    },
    httpRequest: {
      handleRequest(head, ctx) {
        (ctx.ext as { path?: string }).path = head.path;
        return { kind: 'forward' };
      },
    },
  }),
});

let oxy: AppUnderTest;
let bodies: AppUnderTest;
let h1Proxy: AppUnderTest;
let idle: AppUnderTest;
const caFile = join(dir, 'oxy-ca.pem');

before(async () => {
  const egress = { tls: { extra_ca: [originCaFile] } };
  oxy = await startApp(hooksApp({}), {
    settings: { egress, interception: { enabled: true, hosts: [], ca: { dir: join(dir, 'ca') } } },
  });
  bodies = await startApp(bodyApp, { settings: { egress } });
  h1Proxy = await startApp(hooksApp({}), {
    settings: { egress: { tls: { extra_ca: [originCaFile], http2: false } } },
  });
  idle = await startApp(hooksApp({}), {
    settings: {
      egress: { tls: { extra_ca: [originCaFile] }, pool_idle_timeout: '300ms', response_timeout: '300ms' },
    },
  });
  writeFileSync(caFile, oxy.proxy.runtime.interception?.ca.certPem ?? '');
});

after(async () => {
  await Promise.all([oxy.stop(), bodies.stop(), h1Proxy.stop(), idle.stop()]);
  for (const s of [both, h2only, limited, untrusted]) s.server.close();
  h1only.close();
  rmSync(dir, { recursive: true, force: true });
});

/** An absolute-form `https://` request through `proxy` (HTTP/1.1 to the proxy). */
function viaProxy(
  proxy: AppUnderTest,
  url: string,
  init: { method?: string; body?: string; agent?: http.Agent } = {},
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  const [host, port] = proxy.address().split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port: Number(port), method: init.method ?? 'GET', path: url, agent: init.agent ?? false },
      (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.setHeader('host', new URL(url).host);
    req.on('error', reject);
    req.end(init.body);
  });
}

/**
 * The request records of `proxy` written since `from` whose target has port `port`, once there
 * are `n` of them. Waiting for `from + n` records of any kind was not enough: a record of an
 * earlier test written late counts toward it, and the filter then found one too few.
 */
async function recordsFor(proxy: AppUnderTest, from: number, port: number, n: number) {
  const mine = () =>
    proxy
      .auditRecords()
      .slice(from)
      .filter((r) => r.target.endsWith(`:${port}`) && r.kind === 'request');
  await waitUntil(() => mine().length >= n, `${n} request records for port ${port}`, 5000);
  return mine();
}

// Each describe's timeout bounds all of its tests together: 5 s of work here took several times
// that on a loaded two-core machine, so the bounds leave room (a minute).
describe('https:// absolute-form to HTTP/2 origins', { timeout: 60_000 }, () => {
  test('an origin offering h2 and http/1.1 answers over h2; the audit says upstream_protocol h2', async () => {
    const from = oxy.auditRecords().length;
    const r = await viaProxy(oxy, `https://localhost:${both.port}/a?b=1`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'origin saw GET /a?b=1 over 2.0 te=trailers');
    const [rec] = await recordsFor(oxy, from, both.port, 1);
    assert.equal(rec?.upstream_protocol, 'h2');
    assert.equal(rec?.status, 200);
  });

  test('an h2-only origin gets a POST body; its trailers reach an HTTP/2 client', async () => {
    const r = await viaProxy(oxy, `https://localhost:${h2only.port}/post`, {
      method: 'POST',
      body: 'x'.repeat(70_000),
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, `origin saw POST /post over 2.0 te=trailers body=${'x'.repeat(70_000)}`);
    const session = http2.connect(`http://${oxy.address()}`);
    session.on('error', () => {});
    try {
      const req = session.request({
        ':scheme': 'https',
        ':authority': `localhost:${h2only.port}`,
        ':path': '/trailers',
      });
      req.end();
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (c: string) => {
        body += c;
      });
      const [trailers] = (await once(req, 'trailers')) as [http2.IncomingHttpHeaders];
      assert.equal(body, 'with trailers');
      assert.equal(trailers['x-checksum'], 'abc');
    } finally {
      session.close();
    }
  });

  test("Expect: 100-continue: the origin's 100 reaches the client, then the body goes up", async () => {
    const [host, port] = oxy.address().split(':') as [string, string];
    const res = await new Promise<{ body: string; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = http.request(
        {
          host,
          port: Number(port),
          method: 'PUT',
          path: `https://localhost:${h2only.port}/expect`,
          agent: false,
          headers: { host: `localhost:${h2only.port}`, expect: '100-continue', 'content-length': '5' },
        },
        (r) => {
          let body = '';
          r.on('data', (c: Buffer) => {
            body += c.toString();
          });
          r.on('end', () => resolve({ body, continued }));
        },
      );
      req.on('continue', () => {
        continued = true;
        req.end('hello');
      });
      req.on('error', reject);
    });
    assert.equal(res.continued, true);
    assert.equal(res.body, 'origin saw PUT /expect over 2.0 te=trailers body=hello');
  });

  test('a response body is paced by the client: the origin waits while the client does not read', async () => {
    const [host, port] = oxy.address().split(':') as [string, string];
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(
        { host, port: Number(port), path: `https://localhost:${h2only.port}/big`, agent: false },
        resolve,
      );
      req.setHeader('host', `localhost:${h2only.port}`);
      req.on('error', reject);
      req.end();
    });
    res.pause();
    await new Promise((r) => setTimeout(r, 400));
    const whilePaused = bigWritten;
    assert.ok(
      whilePaused > 0 && whilePaused < BIG,
      `${whilePaused} bytes written while the client read nothing`,
    );
    let got = 0;
    res.on('data', (c: Buffer) => {
      got += c.length;
    });
    res.resume();
    await once(res, 'end');
    assert.equal(got, BIG);
  });

  test('an origin that resets a stream after the head: the response is cut', async () => {
    await assert.rejects(viaProxy(oxy, `https://localhost:${h2only.port}/cut`));
  });

  test('concurrent requests share one HTTP/2 session', async () => {
    const sessions = h2only.state.sessions;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    try {
      const all = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          viaProxy(oxy, `https://localhost:${h2only.port}/slow?${i}`, { agent }),
        ),
      );
      for (const r of all) assert.equal(r.body, 'slow');
    } finally {
      agent.destroy();
    }
    // The session opened by the earlier tests carries them all.
    assert.ok(h2only.state.sessions - sessions <= 1, `${h2only.state.sessions - sessions} new sessions`);
    assert.ok(h2only.state.maxOpen >= 10, `at most ${h2only.state.maxOpen} streams at once`);
  });

  test('SETTINGS_MAX_CONCURRENT_STREAMS is honoured: more sessions, never more streams than allowed', async () => {
    const all = await Promise.all(
      Array.from({ length: 6 }, (_, i) => viaProxy(oxy, `https://localhost:${limited.port}/${i}`)),
    );
    for (const r of all) assert.equal(r.body, 'limited');
    assert.equal(limited.state.maxOpen, 2);
    assert.ok(limited.state.sessions >= 2, `${limited.state.sessions} sessions`);
  });

  test('a refused stream is sent once more; refused twice, it is a 502', async () => {
    const r = await viaProxy(oxy, `https://localhost:${h2only.port}/refuse-once`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'origin saw GET /refuse-once over 2.0 te=trailers');
    const streams = h2only.state.streams;
    const bad = await viaProxy(oxy, `https://localhost:${h2only.port}/refuse-always`);
    assert.equal(bad.status, 502);
    assert.equal(h2only.state.streams - streams, 2);
  });

  test('after a GOAWAY the next request goes on a new session', async () => {
    const r = await viaProxy(oxy, `https://localhost:${h2only.port}/bye`);
    assert.equal(r.body, 'bye');
    const sessions = h2only.state.sessions;
    const next = await viaProxy(oxy, `https://localhost:${h2only.port}/after`);
    assert.equal(next.body, 'origin saw GET /after over 2.0 te=trailers');
    assert.equal(h2only.state.sessions, sessions + 1);
  });

  test('a body hook rewrites a response body that arrived over h2', async () => {
    const r = await viaProxy(bodies, `https://localhost:${h2only.port}/upper/x`);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ORIGIN SAW GET /UPPER/X OVER 2.0 TE=TRAILERS');
    assert.equal(r.headers['content-length'], undefined);
  });

  test('a request body stopped by a body hook: the client gets its status, the upstream stream is reset', async () => {
    const client = http2.connect(`http://${bodies.address()}`);
    client.on('error', () => {});
    try {
      const req = client.request({
        ':method': 'POST',
        ':scheme': 'https',
        ':authority': `localhost:${h2only.port}`,
        ':path': '/stop-req/x',
      });
      req.on('error', () => {});
      req.write('first piece');
      const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      assert.equal(h[':status'], 451);
      req.close();
    } finally {
      client.destroy();
    }
    await waitUntil(
      () => h2only.state.resets.includes(`/stop-req/x ${http2.constants.NGHTTP2_CANCEL}`),
      `the origin saw the stream reset (${h2only.state.resets.join(', ')})`,
    );
  });

  test('an origin whose certificate does not verify is a 502 naming the reason', async () => {
    const r = await viaProxy(oxy, `https://localhost:${untrusted.port}/`);
    assert.equal(r.status, 502);
    assert.match(r.body, /certificate verification failed/);
    assert.equal(untrusted.state.streams, 0);
  });

  test('an HTTP/1.1-only origin still works, and keeps working once known', async () => {
    const from = oxy.auditRecords().length;
    for (let i = 0; i < 2; i++) {
      const r = await viaProxy(oxy, `https://localhost:${h1Port}/h1/${i}`);
      assert.equal(r.body, `h1 origin saw /h1/${i} over 1.1`);
    }
    const recs = await recordsFor(oxy, from, h1Port, 2);
    assert.deepEqual(
      recs.map((x) => x.upstream_protocol),
      ['http/1.1', 'http/1.1'],
    );
  });

  test('egress.tls.http2 false: the same origin is served over HTTP/1.1', async () => {
    const r = await viaProxy(h1Proxy, `https://localhost:${both.port}/off`);
    assert.equal(r.body, 'origin saw GET /off over 1.1');
  });
});

describe('session and stream lifetimes', { timeout: 60_000 }, () => {
  test('a client that leaves cancels its stream (RST_STREAM CANCEL); the session carries on', async () => {
    const streams = h2only.state.streams;
    // An HTTP/2 client to the proxy: it resets its stream, and the proxy hears of it at once.
    const client = http2.connect(`http://${oxy.address()}`);
    client.on('error', () => {});
    const hang = client.request({
      ':scheme': 'https',
      ':authority': `localhost:${h2only.port}`,
      ':path': '/hang',
    });
    hang.on('error', () => {});
    hang.end();
    await waitUntil(() => h2only.state.streams > streams, 'the origin saw /hang');
    // Counted once /hang is on its session: the session an earlier test left may have idled out
    // (egress.pool_idle_timeout, 4 s) on a loaded machine, and /hang then opened a new one.
    const sessions = h2only.state.sessions;
    hang.close(http2.constants.NGHTTP2_CANCEL);
    client.close();
    await waitUntil(() => hangCodes.length === 1, 'the origin saw the stream close');
    assert.equal(hangCodes[0], http2.constants.NGHTTP2_CANCEL);
    const next = await viaProxy(oxy, `https://localhost:${h2only.port}/after-cancel`);
    assert.equal(next.body, 'origin saw GET /after-cancel over 2.0 te=trailers');
    assert.equal(h2only.state.sessions, sessions);
  });

  test('an HTTP/2 client cancelling mid-response, then HTTP/1.1 and HTTP/2 clients: one upstream session', async () => {
    // A fresh origin, so that its session count is this test's alone. The endpoint's two
    // on-ramps once had a pool each: the HTTP/1.1 client's request opened a second session
    // while the HTTP/2 client's was open and idle.
    const fresh = await startH2Origin({ allowHTTP1: false }, (req, res) => {
      if (req.url !== '/long') return false;
      res.write(Buffer.alloc(64 * 1024, 0x62)); // the rest never comes: the client cancels
      return true;
    });
    try {
      const client = http2.connect(`http://${oxy.address()}`);
      client.on('error', () => {});
      const ask = (path: string) =>
        client.request({ ':scheme': 'https', ':authority': `localhost:${fresh.port}`, ':path': path });
      const long = ask('/long');
      long.on('error', () => {});
      long.end();
      await once(long, 'data'); // mid-response
      long.close(http2.constants.NGHTTP2_CANCEL);
      await waitUntil(() => fresh.state.resets.length === 1, 'the origin saw the cancel');
      const h1 = await viaProxy(oxy, `https://localhost:${fresh.port}/from-h1`);
      assert.equal(h1.body, 'origin saw GET /from-h1 over 2.0 te=trailers');
      const h2 = ask('/from-h2');
      h2.end();
      let body = '';
      h2.setEncoding('latin1');
      h2.on('data', (c: string) => {
        body += c;
      });
      await once(h2, 'end');
      client.close();
      assert.equal(body, 'origin saw GET /from-h2 over 2.0 te=trailers');
      assert.equal(fresh.state.sessions, 1, `${fresh.state.sessions} sessions to one origin`);
      assert.equal(fresh.state.closed, 0);
    } finally {
      fresh.server.close();
    }
  });

  test('egress.response_timeout: no head in time is a 504, and the stream is reset', async () => {
    const from = h2only.state.resets.length;
    const r = await viaProxy(idle, `https://localhost:${h2only.port}/hang`);
    assert.equal(r.status, 504);
    await waitUntil(() => h2only.state.resets.length > from, 'the origin saw the reset');
    assert.equal(h2only.state.resets[from], `/hang ${http2.constants.NGHTTP2_CANCEL}`);
  });

  test('a session with no stream for egress.pool_idle_timeout is closed', async () => {
    const closed = both.state.closed;
    const r = await viaProxy(idle, `https://localhost:${both.port}/idle`);
    assert.equal(r.body, 'origin saw GET /idle over 2.0 te=trailers');
    await waitUntil(() => both.state.closed > closed, 'the idle session closed', 3000);
  });
});

describe('intercepted requests', { timeout: 60_000 }, () => {
  test('curl through a CONNECT, with only the exported CA trusted, reaches an h2-only origin', async () => {
    for (const version of ['--http1.1', '--http2']) {
      const r = await curl([
        '-x',
        `http://${oxy.address()}`,
        '--cacert',
        caFile,
        version,
        `https://localhost:${h2only.port}/inside`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'origin saw GET /inside over 2.0 te=trailers');
    }
  });
});
