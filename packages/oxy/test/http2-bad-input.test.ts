/**
 * Malformed and hostile HTTP/2 input: garbage after the preface, bad CONNECT authorities,
 * resets in the middle of tunnels, a client vanishing with streams open, refused upstreams and
 * blocking hooks. Each costs a stream or that client's connection only; the proxy goes on
 * serving the next client. Also the telemetry promise: each stream runs in its own request
 * context and trace, forked from (and linked to) the connection's.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { after, test } from 'node:test';
import { log } from 'foundations/telemetry';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import { HTTP2_PREFACE } from '../src/onramps/http2/preface.ts';
import {
  captureTelemetry,
  connectTunnelH2,
  hooksApp,
  rawExchange,
  readBytes,
  startApp,
  startTcpEcho,
  type TcpPeer,
  unusedPort,
  waitUntil,
} from '../src/testing/index.ts';

const echo: TcpPeer = await startTcpEcho();
/** CONNECTs to this peer get a response head the hook spoiled (a field name HTTP/2 refuses). */
const badHead: TcpPeer = await startTcpEcho();
const badHeadPort = badHead.port;
const app = await startApp(
  hooksApp({
    httpRequest: {
      handleProxyConnectRequest(head) {
        log.info('connect hook', { authority: head.authority });
        return head.headers['x-block'] === 'yes'
          ? ConnectDirective.block(403, 'no thanks')
          : ConnectDirective.allow();
      },
      handleProxyConnectResponse(res, ctx) {
        if (ctx.target.port === badHeadPort) res.headers['bad header name'] = 'x';
        return res;
      },
      handleRequest(head) {
        if (head.path === '/answered-by-hook') {
          return RequestDecision.respond({
            status: 418,
            headers: { 'x-by': 'hook' },
            body: 'short and stout',
          });
        }
        return RequestDecision.forward();
      },
    },
  }),
);
after(() => Promise.all([echo.close(), badHead.close()]).then(() => app.stop()));
const proxy = app.proxy;
const proxyUrl = `http://${app.address()}`;

function session(): http2.ClientHttp2Session {
  const s = http2.connect(proxyUrl);
  s.on('error', () => {});
  after(() => s.destroy());
  return s;
}

async function stillServes(): Promise<void> {
  const t = await connectTunnelH2(proxy.address(), echo.authority);
  try {
    assert.equal(t.status, 200);
    t.stream.end('alive');
    assert.equal((await readBytes(t.stream, 5)).toString(), 'alive');
  } finally {
    t.session.destroy();
  }
}

async function rawAfterPreface(bytes: Buffer): Promise<{ data: Buffer; closed: boolean }> {
  return rawExchange(proxy.address(), Buffer.concat([HTTP2_PREFACE, bytes]), { timeoutMs: 3000 });
}

/** Frame types in the bytes a server sent (9-byte frame headers walked in order). */
function frameTypes(data: Buffer): number[] {
  const types: number[] = [];
  for (let i = 0; i + 9 <= data.length; ) {
    const len = data.readUIntBE(i, 3);
    types.push(data[i + 3] as number);
    i += 9 + len;
  }
  return types;
}

const GOAWAY = 7;

test('garbage after the preface: GOAWAY, connection closed, next client served', async () => {
  const r = await rawAfterPreface(Buffer.from('this is not an HTTP/2 frame at all, not even close'));
  assert.ok(r.closed, 'closed');
  assert.ok(frameTypes(r.data).includes(GOAWAY), 'sent GOAWAY');
  await stillServes();
});

test('a frame larger than the advertised max frame size: GOAWAY', async () => {
  const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
  const huge = Buffer.alloc(9);
  huge.writeUIntBE(16_777_215, 0, 3); // DATA on stream 1, 16 MiB - 1
  huge[3] = 0;
  huge.writeUInt32BE(1, 5);
  const r = await rawAfterPreface(Buffer.concat([settings, huge]));
  assert.ok(r.closed);
  assert.ok(frameTypes(r.data).includes(GOAWAY));
  await stillServes();
});

// Authorities nghttp2 already rejects as malformed fields (RST_STREAM PROTOCOL_ERROR) and
// authorities that are well-formed fields but no CONNECT target (400 from the proxy).
const resetByNghttp2 = ['u@example.com:443', 'exa mple.com:80'];
const answered400 = [
  'example.com',
  '[::1:443',
  'example.com:0',
  'example.com:70000',
  ':443',
  'example.com:80x',
];
for (const authority of [...resetByNghttp2, ...answered400]) {
  test(`CONNECT to ${JSON.stringify(authority)}: refused on that stream, session goes on`, async () => {
    const s = session();
    const bad = s.request({ ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    bad.on('error', () => {});
    const outcome = await new Promise<string>((resolve) => {
      bad.once('response', (h: http2.IncomingHttpHeaders) => resolve(String(h[':status'])));
      bad.once('close', () => resolve(`reset ${bad.rstCode}`));
    });
    assert.equal(
      outcome,
      answered400.includes(authority) ? '400' : `reset ${http2.constants.NGHTTP2_PROTOCOL_ERROR}`,
    );
    const good = await connectTunnelH2(s, echo.authority);
    assert.equal(good.status, 200);
    good.stream.end();
  });
}

test('a stream reset mid-tunnel closes its upstream only; siblings keep flowing', async () => {
  const s = session();
  const a = await connectTunnelH2(s, echo.authority);
  const b = await connectTunnelH2(s, echo.authority);
  const open = echo.open();
  a.stream.close(http2.constants.NGHTTP2_CANCEL);
  await waitUntil(() => echo.open() <= open - 1, 'the upstream of the reset stream to close');
  b.stream.write('still here');
  assert.equal((await readBytes(b.stream, 10)).toString(), 'still here');
  b.stream.end();
});

test('a client vanishing with 20 tunnels open: every upstream is closed', async () => {
  const own = await startTcpEcho(); // its own peer, so earlier tests' tunnels do not count
  after(() => own.close());
  const s = http2.connect(proxyUrl);
  s.on('error', () => {});
  await Promise.all(Array.from({ length: 20 }, () => connectTunnelH2(s, own.authority)));
  await waitUntil(() => own.open() === 20, '20 upstreams');
  s.socket.destroy();
  await waitUntil(() => own.open() === 0, 'upstreams to close');
  await stillServes();
});

test('a refused upstream is a 502 on its stream', async () => {
  const port = await unusedPort();
  const s = session();
  const t = await connectTunnelH2(s, `127.0.0.1:${port}`);
  assert.equal(t.status, 502);
  await stillServes();
});

test('a CONNECT hook block answers that stream only', async () => {
  const s = session();
  const blocked = await connectTunnelH2(s, echo.authority, { 'x-block': 'yes' });
  assert.equal(blocked.status, 403);
  const ok = await connectTunnelH2(s, echo.authority);
  assert.equal(ok.status, 200);
  ok.stream.end();
});

test('each stream logs with its connection fields and its own request id, in a trace linked to the connection', async () => {
  const tele = captureTelemetry();
  after(() => tele.stop());
  const s = session();
  for (let i = 0; i < 2; i++) {
    const t = await connectTunnelH2(s, echo.authority);
    t.stream.end();
    await once(t.stream, 'close');
  }
  const records = tele.logs.filter((r) => r.msg === 'connect hook');
  assert.equal(records.length, 2);
  const [r1, r2] = records as [(typeof records)[0], (typeof records)[0]];
  assert.equal(r1.fields.endpoint, 'main');
  assert.equal(r1.fields.conn_id, r2.fields.conn_id, 'same connection');
  assert.match(String(r1.fields.client), /^127\.0\.0\.1:\d+$/);
  assert.notEqual(r1.fields.request_id, r2.fields.request_id, 'a request id per stream');
  assert.ok(r1.traceId !== undefined && r2.traceId !== undefined);
  assert.notEqual(r1.traceId, r2.traceId, 'a trace per stream');
  s.destroy();
  await waitUntil(() => tele.spans().some((sp) => sp.name === 'connection'), 'the connection span');
  const conn = tele.spans().find((sp) => sp.name === 'connection');
  const forks = tele.spans().filter((sp) => sp.name === 'connect' && sp.traceId === r1.traceId);
  assert.equal(forks.length, 1);
  assert.deepEqual(
    forks[0]?.links.map((l) => l.traceId),
    [conn?.traceId],
  );
});

async function h2Request(
  s: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  const req = s.request(headers);
  req.on('error', () => {});
  const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  let body = '';
  req.setEncoding('utf8');
  for await (const c of req) body += c;
  return { status: Number(h[':status']), headers: h, body };
}

test('forwarding over HTTP/2: a hook answer, a refused upstream, a refused https :scheme upstream', async () => {
  const s = session();
  const byHook = await h2Request(s, {
    ':method': 'GET',
    ':scheme': 'http',
    ':authority': 'example.test',
    ':path': '/answered-by-hook',
  });
  assert.deepEqual([byHook.status, byHook.headers['x-by'], byHook.body], [418, 'hook', 'short and stout']);

  const port = await unusedPort();
  const refused = await h2Request(s, {
    ':method': 'GET',
    ':scheme': 'http',
    ':authority': `127.0.0.1:${port}`,
    ':path': '/',
  });
  assert.equal(refused.status, 502);

  // `:scheme https` is forwarded over TLS: a refused origin is a 502 like a cleartext one.
  const https = await h2Request(s, {
    ':method': 'GET',
    ':scheme': 'https',
    ':authority': `127.0.0.1:${port}`,
    ':path': '/',
  });
  assert.equal(https.status, 502);
  await stillServes();
});

test('a response head a hook spoiled resets that CONNECT stream; the proxy goes on', async () => {
  const s = session();
  const st = s.request({ ':method': 'CONNECT', ':authority': badHead.authority }, { endStream: false });
  st.on('error', () => {});
  const outcome = await new Promise<string>((resolve) => {
    st.once('response', (h: http2.IncomingHttpHeaders) => resolve(String(h[':status'])));
    st.once('close', () => resolve(`reset ${st.rstCode}`));
  });
  assert.equal(outcome, `reset ${http2.constants.NGHTTP2_INTERNAL_ERROR}`);
  await waitUntil(() => badHead.open() === 0, 'the upstream to close');
  await stillServes();
});
