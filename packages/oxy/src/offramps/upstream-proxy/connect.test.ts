import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { parseSettings } from 'foundations/settings';
import { ProxyAgent, request } from 'undici';
import { isOxyError } from '../../errors.ts';
import { connectHappyEyeballs } from '../tcp/happy-eyeballs.ts';
import {
  absoluteFormRequestOptions,
  connectViaProxy,
  parseResponseHead,
  proxyAuthorization,
  UpstreamProxySettings,
  undiciProxyAgentOptions,
  upstreamProxyFromSettings,
} from './index.ts';

function code(expected: string, message?: RegExp, status?: number) {
  return (e: unknown) => {
    assert.ok(isOxyError(e), String(e));
    assert.equal(e.code, expected, e.message);
    if (message !== undefined) assert.match(e.message, message);
    if (status !== undefined) assert.equal(e.status, status);
    return true;
  };
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

/** Reads one request head from `socket`; calls back with its lines and any bytes after it. */
function readHead(socket: net.Socket, cb: (lines: string[], rest: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    socket.off('data', onData);
    cb(buf.subarray(0, end).toString('latin1').split('\r\n'), buf.subarray(end + 4));
  };
  socket.on('data', onData);
}

describe('connectViaProxy through a real CONNECT proxy', () => {
  const BASIC = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
  const servers: net.Server[] = [];
  const seen: string[][] = [];
  let echoPort: number;
  let proxyPort: number;

  before(async () => {
    const echo = net.createServer((s) => s.pipe(s));
    echoPort = await listen(echo);
    // The proxy: answers 407 unless the credentials match (when the client sent any for
    // user "alice" or a Bearer token), then opens the tunnel and sends one byte early.
    const proxy = net.createServer((client) => {
      client.on('error', () => client.destroy());
      readHead(client, (lines, rest) => {
        seen.push(lines);
        const auth = lines
          .find((l) => l.toLowerCase().startsWith('proxy-authorization:'))
          ?.slice(20)
          .trim();
        if (auth !== undefined && auth !== BASIC && auth !== 'Bearer tok') {
          client.end(
            'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n',
          );
          return;
        }
        const [, authority] = (lines[0] ?? '').split(' ');
        const port = Number(authority?.slice(authority.lastIndexOf(':') + 1));
        const upstream = net.connect(port, '127.0.0.1', () => {
          client.write('HTTP/1.1 200 Connection Established\r\nVia: test\r\n\r\n!');
          upstream.write(rest);
          client.pipe(upstream).pipe(client);
        });
        upstream.on('error', () => client.destroy());
      });
    });
    proxyPort = await listen(proxy);
    servers.push(echo, proxy);
  });
  after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

  it('opens a tunnel, returns the early bytes as head, and carries data both ways', async () => {
    const tunnel = await connectViaProxy(
      { host: '127.0.0.1', port: proxyPort },
      { host: '127.0.0.1', port: echoPort },
      { timeoutMs: 2000 },
    );
    assert.equal(tunnel.status, 200);
    assert.equal(tunnel.head.toString(), '!');
    assert.equal(tunnel.socket.isPaused(), true);
    assert.deepEqual(seen.at(-1), [`CONNECT 127.0.0.1:${echoPort} HTTP/1.1`, `Host: 127.0.0.1:${echoPort}`]);
    tunnel.socket.write('ping');
    tunnel.socket.resume();
    const [echoed] = (await new Promise((r) => tunnel.socket.once('data', (d) => r([d])))) as [Buffer];
    assert.equal(echoed.toString(), 'ping');
    tunnel.socket.destroy();
  });

  it('uses a connection the caller already opened (e.g. by Happy Eyeballs)', async () => {
    const socket = await connectHappyEyeballs(['127.0.0.1'], proxyPort, { timeoutMs: 2000 });
    const tunnel = await connectViaProxy(
      { host: '127.0.0.1', port: proxyPort },
      { host: '127.0.0.1', port: echoPort },
      { timeoutMs: 2000, socket },
    );
    assert.equal(tunnel.socket, socket);
    assert.equal(tunnel.head.toString(), '!');
    socket.destroy();
    await assert.rejects(
      connectViaProxy(
        { host: '127.0.0.1', port: proxyPort },
        { host: '127.0.0.1', port: echoPort },
        { timeoutMs: 2000, socket },
      ),
      code('OXY_ERR_UPSTREAM_PROXY', /already closed/),
    );
  });

  it('sends Basic credentials, or a raw header value', async () => {
    const target = { host: '127.0.0.1', port: echoPort };
    const t1 = await connectViaProxy(
      { host: '127.0.0.1', port: proxyPort, auth: { username: 'alice', password: 's3cret' } },
      target,
      { timeoutMs: 2000 },
    );
    assert.ok(seen.at(-1)?.includes(`Proxy-Authorization: ${BASIC}`));
    t1.socket.destroy();
    const t2 = await connectViaProxy(
      { host: '127.0.0.1', port: proxyPort, auth: { header: 'Bearer tok' } },
      target,
      { timeoutMs: 2000 },
    );
    assert.ok(seen.at(-1)?.includes('Proxy-Authorization: Bearer tok'));
    t2.socket.destroy();
  });

  it('reports a 407 with its status', async () => {
    await assert.rejects(
      connectViaProxy(
        { host: '127.0.0.1', port: proxyPort, auth: { username: 'alice', password: 'wrong' } },
        { host: '127.0.0.1', port: echoPort },
        { timeoutMs: 2000 },
      ),
      code('OXY_ERR_UPSTREAM_PROXY', /^upstream proxy answered 407 Proxy Authentication Required$/, 407),
    );
  });

  it('brackets an IPv6 target', async () => {
    const t = connectViaProxy(
      { host: '127.0.0.1', port: proxyPort },
      { host: '::1', port: echoPort },
      { timeoutMs: 2000 },
    );
    await t.then(
      (x) => x.socket.destroy(),
      () => undefined,
    );
    assert.equal(seen.at(-1)?.[0], `CONNECT [::1]:${echoPort} HTTP/1.1`);
  });

  it('refuses credentials or targets that would inject lines', async () => {
    await assert.rejects(
      connectViaProxy(
        { host: '127.0.0.1', port: proxyPort, auth: { header: 'x\r\nEvil: 1' } },
        { host: 'a', port: 1 },
        { timeoutMs: 100 },
      ),
      code('OXY_ERR_INVALID_APP', /line break/),
    );
    await assert.rejects(
      connectViaProxy(
        { host: '127.0.0.1', port: proxyPort },
        { host: 'a b\r\n', port: 1 },
        { timeoutMs: 100 },
      ),
      code('OXY_ERR_UPSTREAM_PROXY', /invalid CONNECT target/),
    );
  });
});

describe('connectViaProxy against broken proxies', () => {
  const servers: net.Server[] = [];
  /** A proxy that reads the CONNECT and then does `act` with the socket. */
  async function brokenProxy(act: (s: net.Socket) => void): Promise<number> {
    const server = net.createServer((s) => {
      s.on('error', () => s.destroy());
      readHead(s, () => act(s));
    });
    servers.push(server);
    return listen(server);
  }
  after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));
  const target = { host: 'example.test', port: 443 };

  const malformed: [string, string, RegExp][] = [
    ['garbage status line', 'garbage\r\n\r\n', /bad status line "garbage"/],
    ['four-digit status', 'HTTP/1.1 2000 OK\r\n\r\n', /bad status line/],
    ['HTTP/2 status line', 'HTTP/2 200\r\n\r\n', /bad status line/],
    ['header without colon', 'HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n', /bad header line "NoColonHere"/],
    ['obsolete line folding', 'HTTP/1.1 200 OK\r\nA: b\r\n  folded\r\n\r\n', /bad header line/],
    ['bare LF', 'HTTP/1.1 200 OK\nA: b\r\n\r\n', /bad status line/],
  ];
  for (const [name, answer, pattern] of malformed) {
    it(`rejects a malformed answer: ${name}`, async () => {
      const port = await brokenProxy((s) => s.end(answer));
      await assert.rejects(
        connectViaProxy({ host: '127.0.0.1', port }, target, { timeoutMs: 2000 }),
        code('OXY_ERR_UPSTREAM_PROXY', pattern),
      );
    });
  }

  it('rejects an answer head over the limit, before it ends', async () => {
    const port = await brokenProxy((s) => s.write(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(2000)}`));
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port }, target, { timeoutMs: 2000, maxHeadBytes: 1024 }),
      code('OXY_ERR_UPSTREAM_PROXY', /larger than 1024 bytes/),
    );
  });

  it('skips interim 1xx answers before the 2xx, within the head limit (RFC 9110 §15.2)', async () => {
    const interim = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n';
    const port = await brokenProxy((s) => s.write(`${interim}HTTP/1.1 200 OK\r\n\r\ntunnel`));
    const t = await connectViaProxy({ host: '127.0.0.1', port }, target, { timeoutMs: 2000 });
    assert.equal(t.status, 200);
    assert.equal(t.head.toString(), 'tunnel');
    t.socket.destroy();
    const refused = await brokenProxy((s) => s.end('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 No\r\n\r\n'));
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port: refused }, target, { timeoutMs: 2000 }),
      code('OXY_ERR_UPSTREAM_PROXY', /^upstream proxy answered 403 No$/, 403),
    );
    // Endless 1xx heads are bounded by the same limit as one head.
    const endless = await brokenProxy((s) => {
      for (let i = 0; i < 100; i++) s.write('HTTP/1.1 100 Continue\r\n\r\n');
    });
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port: endless }, target, { timeoutMs: 2000, maxHeadBytes: 1024 }),
      code('OXY_ERR_UPSTREAM_PROXY', /larger than 1024 bytes/),
    );
    const switching = await brokenProxy((s) => s.end('HTTP/1.1 101 Switching Protocols\r\n\r\n'));
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port: switching }, target, { timeoutMs: 2000 }),
      code('OXY_ERR_UPSTREAM_PROXY', /answered 101/, 101),
    );
  });

  it('reports a proxy that closes without answering, and one that is not listening', async () => {
    const port = await brokenProxy((s) => s.end());
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port }, target, { timeoutMs: 2000 }),
      code('OXY_ERR_UPSTREAM_PROXY', /closed the connection before answering/),
    );
    const closed = net.createServer();
    const closedPort = await listen(closed);
    await new Promise((r) => closed.close(r));
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port: closedPort }, target, { timeoutMs: 2000 }),
      code(
        'OXY_ERR_UPSTREAM_PROXY',
        new RegExp(`^upstream proxy 127\\.0\\.0\\.1:${closedPort} failed \\(ECONNREFUSED\\)$`),
      ),
    );
  });

  it('times out on a proxy that never answers, and stops on abort', async () => {
    const port = await brokenProxy(() => undefined);
    await assert.rejects(
      connectViaProxy({ host: '127.0.0.1', port }, target, { timeoutMs: 150 }),
      (e: unknown) => {
        assert.ok(isOxyError(e) && e.code === 'OXY_ERR_CONNECT_TIMEOUT' && e.retryable, String(e));
        return true;
      },
    );
    const ac = new AbortController();
    const pending = connectViaProxy({ host: '127.0.0.1', port }, target, {
      timeoutMs: 5000,
      signal: ac.signal,
    });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(pending, code('OXY_ERR_ABORTED'));
  });
});

describe('absolute-form through the upstream proxy', () => {
  let proxy: http.Server;
  let port: number;
  before(async () => {
    // Answers itself with what it received, so nothing leaves loopback.
    proxy = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          url: req.url,
          host: req.headers.host,
          auth: req.headers['proxy-authorization'] ?? null,
        }),
      );
    });
    port = await listen(proxy);
  });
  after(() => new Promise((r) => proxy.close(r)));

  it('node:http sends the absolute URL with Proxy-Authorization, dropping a caller-supplied one', async () => {
    const opts = absoluteFormRequestOptions(
      { host: '127.0.0.1', port, auth: { username: 'u', password: 'p' } },
      'http://example.test:8080/a?b=1',
      { headers: { 'proxy-authorization': 'Basic client-secret', accept: '*/*' } },
    );
    const body = await new Promise<string>((resolve, reject) => {
      http
        .request(opts, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve(text));
        })
        .on('error', reject)
        .end();
    });
    assert.deepEqual(JSON.parse(body), {
      url: 'http://example.test:8080/a?b=1',
      host: 'example.test:8080',
      auth: `Basic ${Buffer.from('u:p').toString('base64')}`,
    });
    assert.throws(
      () => absoluteFormRequestOptions({ host: '127.0.0.1', port }, 'https://example.test/'),
      /use CONNECT/,
    );
  });

  it('undici ProxyAgent with these options sends absolute-form for http: URLs', async () => {
    const agent = new ProxyAgent(
      undiciProxyAgentOptions({ host: '127.0.0.1', port, auth: { header: 'Bearer t' } }),
    );
    try {
      const res = await request('http://example.test/path', { dispatcher: agent });
      assert.deepEqual(await res.body.json(), {
        url: 'http://example.test/path',
        host: 'example.test',
        auth: 'Bearer t',
      });
    } finally {
      await agent.close();
    }
  });
});

describe('upstream proxy settings and helpers', () => {
  it('is off by default; with credentials gives Basic auth', () => {
    const off = parseSettings(UpstreamProxySettings, []);
    assert.equal(upstreamProxyFromSettings(off), undefined);
    const on = parseSettings(UpstreamProxySettings, [
      { source: 't', value: { enabled: true, addr: '[::1]:3128', username: 'a', password: 'b' } },
    ]);
    assert.deepEqual(upstreamProxyFromSettings(on), {
      host: '::1',
      port: 3128,
      auth: { username: 'a', password: 'b' },
    });
    assert.equal(proxyAuthorization({ username: 'a', password: 'b' }), 'Basic YTpi');
    assert.throws(
      () => parseSettings(UpstreamProxySettings, [{ source: 't', value: { addr: 'nope' } }]),
      /addr: expected "host:port"/,
    );
  });

  it('parses response heads strictly', () => {
    assert.deepEqual(parseResponseHead('HTTP/1.0 200\r\nA:b'), {
      status: 200,
      reason: '',
      headers: [['a', 'b']],
    });
    assert.deepEqual(parseResponseHead(''), { error: 'bad status line ""' });
    assert.deepEqual(parseResponseHead('HTTP/1.1 200 OK\r\n'), { error: 'bad header line ""' });
  });
});
