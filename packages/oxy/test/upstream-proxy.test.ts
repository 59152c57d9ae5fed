/**
 * Chaining through an upstream proxy configured in `egress.upstream_proxy`: tunnels go through
 * it with CONNECT, plain requests in absolute form, both with the configured credentials in
 * `Proxy-Authorization`, and the client's own `Proxy-Authorization` never reaches it.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ConnectDirective, RequestDecision } from '../src/hooks/http-request.ts';
import {
  connectTunnel,
  hooksApp,
  proxyRequest,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  startTcpServer,
} from '../src/testing/index.ts';
import { onHead } from './fixtures/raw-http.ts';

const upstream = await startHttpUpstream({ '/via': { body: 'via the chain' } });
const echo = await startTcpEcho();
const seen: string[] = [];
const chained = await startApp(
  hooksApp({
    httpRequest: {
      handleProxyConnectRequest: (head) => {
        seen.push(`CONNECT ${head.authority} ${head.headers['proxy-authorization']}`);
        return ConnectDirective.allow();
      },
      handleRequest: (head) => {
        seen.push(
          `${head.method} ${head.scheme}://${head.authority}${head.path} ${head.headers['proxy-authorization']}`,
        );
        return RequestDecision.forward();
      },
    },
  }),
);
const front = await startApp(hooksApp(), {
  settings: {
    egress: {
      upstream_proxy: { enabled: true, addr: chained.address(), username: 'oxy', password: 's3cret' },
    },
  },
});
// Stopped together: each one's leak check sees the other's connections (the chained proxy's
// pooled upstream connection opened while the front one ran) close too.
after(async () => {
  await Promise.all([upstream.close(), echo.close()]);
  await Promise.all([front.stop(), chained.stop()]);
});
const basic = `Basic ${Buffer.from('oxy:s3cret').toString('base64')}`;

test('a tunnel goes through the upstream proxy with CONNECT and its credentials', async () => {
  const t = await connectTunnel(front.address(), echo.authority, {
    headers: { 'proxy-authorization': 'Basic client' },
  });
  assert.equal(t.status, 200);
  t.socket.write('chain');
  assert.equal((await readBytes(t.socket, 5)).toString(), 'chain');
  t.socket.destroy();
  assert.deepEqual(seen.at(-1), `CONNECT ${echo.authority} ${basic}`);
});

test('a plain request goes to the upstream proxy in absolute form with its credentials', async () => {
  const r = await proxyRequest(front.address(), `${upstream.origin}/via`, {
    headers: { 'proxy-authorization': 'Basic client' },
  });
  assert.equal(r.text, 'via the chain');
  assert.deepEqual(seen.at(-1), `GET http://${upstream.authority}/via ${basic}`);
  assert.equal(upstream.requests.at(-1)!.headers['proxy-authorization'], undefined);
});

/**
 * A raw upstream proxy: records each request's first line and the address it came from, then
 * answers with `answer(firstLine)` (a CONNECT answered 2xx becomes an echo tunnel).
 */
async function scriptedProxy(answer: (line: string) => string | null, host = '127.0.0.1') {
  const seen: { line: string; from: string }[] = [];
  const server = await startTcpServer(
    (s) =>
      onHead(s, (head) => {
        const line = head.split('\r\n')[0] as string;
        seen.push({ line, from: s.remoteAddress ?? '' });
        const reply = answer(line);
        if (reply === null) return; // silent
        s.write(reply);
        if (line.startsWith('CONNECT ') && / 2\d\d /.test(reply)) s.pipe(s);
        else s.end();
      }),
    host,
  );
  after(() => server.close());
  return { server, seen };
}

const ok = (line: string): string =>
  line.startsWith('CONNECT ')
    ? 'HTTP/1.1 200 Connection Established\r\n\r\n'
    : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok';

/** A CONNECT and a forwarded GET through `app`; both must succeed. */
async function bothPaths(app: { address(): string }): Promise<void> {
  const t = await connectTunnel(app.address(), echo.authority);
  assert.equal(t.status, 200);
  t.socket.write('x');
  assert.equal((await readBytes(t.socket, 1)).toString(), 'x');
  t.socket.destroy();
  const r = await proxyRequest(app.address(), `${upstream.origin}/via`);
  assert.equal(r.status, 200);
  assert.equal(r.text, 'ok');
}

/** What a proxy on `host` saw of both paths through an Oxy with `source_addr: 127.0.0.2`. */
async function seenWithSourceAddr(host: string): Promise<{ line: string; from: string }[]> {
  const { server, seen } = await scriptedProxy(ok, host);
  const app = await startApp(hooksApp(), {
    settings: {
      egress: { source_addr: '127.0.0.2', upstream_proxy: { enabled: true, addr: server.authority } },
    },
  });
  after(() => app.stop());
  await bothPaths(app);
  return seen;
}

test('egress.source_addr applies to tunnels through the upstream proxy as to forwarded requests', async () => {
  const seen = await seenWithSourceAddr('127.0.0.1');
  assert.deepEqual(
    seen.map((x) => [x.line.split(' ')[0], x.from]),
    [
      ['CONNECT', '127.0.0.2'],
      ['GET', '127.0.0.2'],
    ],
  );
});

test('a source_addr of the other family than the proxy is not applied, on either path', async () => {
  const seen = await seenWithSourceAddr('::1');
  assert.deepEqual(
    seen.map((x) => x.from),
    ['::1', '::1'],
  );
});

test("the upstream proxy's name is resolved by egress DNS on tunnels as on forwarded requests", async () => {
  const { server } = await scriptedProxy(ok);
  const port = Number(server.authority.split(':')[1]);
  const resolved: string[] = [];
  const app = await startApp(
    hooksApp({
      egress: {
        dnsResolveOverride: (host) => {
          resolved.push(host);
          return host === 'proxy.test' ? ['127.0.0.1'] : [];
        },
      },
    }),
    { settings: { egress: { upstream_proxy: { enabled: true, addr: `proxy.test:${port}` } } } },
  );
  after(() => app.stop());
  await bothPaths(app);
  assert.deepEqual(resolved, ['proxy.test', 'proxy.test']);
  assert.equal((await app.waitForAudit(2))[0]?.upstream, `127.0.0.1:${port}`);
});

test('a proxy name that resolves to nothing fails both paths with the same status and code', async () => {
  const app = await startApp(hooksApp({ egress: { dnsResolveOverride: () => [] } }), {
    settings: { egress: { upstream_proxy: { enabled: true, addr: 'nowhere.test:3128' } } },
  });
  after(() => app.stop());
  const t = await connectTunnel(app.address(), echo.authority);
  t.socket.destroy();
  const r = await proxyRequest(app.address(), `${upstream.origin}/via`);
  assert.deepEqual([t.status, r.status], [502, 502]);
  const [a, b] = await app.waitForAudit(2);
  assert.ok(a !== undefined && b !== undefined);
  assert.equal(a.close_reason, b.close_reason);
  assert.match(a.close_reason, /^OXY_ERR_/);
});

test("the upstream proxy's 407 is a 502 to the client on both paths, with one message", async () => {
  const { server } = await scriptedProxy(
    () =>
      'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\n' +
      'Content-Length: 0\r\nConnection: close\r\n\r\n',
  );
  const app = await startApp(hooksApp(), {
    settings: { egress: { upstream_proxy: { enabled: true, addr: server.authority } } },
  });
  after(() => app.stop());
  const t = await connectTunnel(app.address(), echo.authority);
  t.socket.destroy();
  const r = await proxyRequest(app.address(), `${upstream.origin}/via`);
  assert.deepEqual([t.status, r.status], [502, 502]);
  assert.equal(r.headers['proxy-authenticate'], undefined);
  assert.match(r.text, /upstream proxy answered 407 Proxy Authentication Required/);
  const records = await app.waitForAudit(2);
  assert.deepEqual(
    records.map((x) => [x.status, x.close_reason]),
    [
      [502, 'OXY_ERR_UPSTREAM_PROXY'],
      [502, 'OXY_ERR_UPSTREAM_PROXY'],
    ],
  );
});
