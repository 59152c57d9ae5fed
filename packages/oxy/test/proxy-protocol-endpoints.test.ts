/**
 * PROXY protocol on Oxy's endpoints, with real peers: haproxy (TLS terminated there) in front of
 * an `http` endpoint with `send-proxy-v2` and `proxy-v2-options ssl,unique-id,authority`, and in
 * front of a `tcp` endpoint with `send-proxy` (v1); `curl --haproxy-protocol` straight at an
 * endpoint; a `tcp` endpoint without a target going to the header's destination; untrusted and
 * malformed senders; PROXY v2 and SPP before datagrams on a `udp` endpoint, with the replies'
 * headers swapped; and the off-ramp: nginx (stream, `proxy_protocol on`) behind Oxy reads the
 * client's address from the header Oxy sends.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { renderMetrics } from 'foundations/telemetry';
import type { AuditRecord } from '../src/audit.ts';
import type { IngressContext } from '../src/context/contexts.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import {
  decodeSpp,
  decodeV2,
  encodeProxyHeader,
  encodeSpp,
  type ProxyHeader,
} from '../src/protocols/proxy-protocol/index.ts';
import {
  type AppUnderTest,
  generateCertificate,
  hooksApp,
  readBytes,
  startApp,
  startHttpUpstream,
  startTcpEcho,
  waitUntil,
} from '../src/testing/index.ts';
import {
  freePort,
  type L4Peer,
  missingL4Peers,
  startHaproxy,
  startNginxStream,
} from './fixtures/l4-peers.ts';
import { datagramHeader } from './fixtures/pp-datagram.ts';

const execFileAsync = promisify(execFile);
const upstream = await startHttpUpstream({ '/hi': { body: 'hello via haproxy' } });
const echo = await startTcpEcho();
const opened: AppUnderTest[] = [];
const peers: L4Peer[] = [];
after(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  await Promise.all(opened.map((a) => a.stop()));
  await Promise.all([upstream.close(), echo.close()]);
});

/** What the hooks saw, per connection: the client, the peer and the header. */
const seen: { client: string; peer: string; header: ProxyHeader | null }[] = [];
const note = (ctx: IngressContext) => {
  seen.push({
    client: `${ctx.client.host}:${ctx.client.port}`,
    peer: `${ctx.peer.host}:${ctx.peer.port}`,
    header: ctx.proxyHeader,
  });
  return IngressDecision.allow();
};

async function start(endpoints: Record<string, unknown>, hooks = {}): Promise<AppUnderTest> {
  const app = await startApp(hooksApp({ ingress: { handleConnection: note }, ...hooks }), {
    settings: { endpoints: { main: {}, ...endpoints } },
  });
  opened.push(app);
  return app;
}

async function recordWhere(app: AppUnderTest, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => app.auditRecords().some(match), 'the audit record');
  return app.auditRecords().find(match) as AuditRecord;
}

const pp = { proxy_protocol: { enabled: true } };

describe('haproxy in front', { skip: missingL4Peers('haproxy', 'curl') }, () => {
  let app: AppUnderTest;
  const ports = { tls: 0, tcp: 0 };
  let dir = '';

  before(async () => {
    app = await start({
      web: { protocol: 'http', addr: '127.0.0.1:0', ...pp },
      raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: echo.authority }, ...pp },
    });
    dir = mkdtempSync(join(tmpdir(), 'oxy-pp-certs-'));
    const cert = await generateCertificate({ dnsNames: ['localhost'] });
    writeFileSync(join(dir, 'haproxy.pem'), `${cert.certPem.trimEnd()}\n${cert.keyPem.trimEnd()}\n`);
    ports.tls = await freePort();
    ports.tcp = await freePort();
    peers.push(
      await startHaproxy(
        [
          'frontend tls',
          `  bind 127.0.0.1:${ports.tls} ssl crt ${join(dir, 'haproxy.pem')}`,
          '  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt',
          '  default_backend web',
          'backend web',
          `  server oxy ${app.address('web')} send-proxy-v2 proxy-v2-options ssl,unique-id,authority`,
          'frontend raw',
          `  bind 127.0.0.1:${ports.tcp}`,
          '  default_backend raw',
          'backend raw',
          `  server oxy ${app.address('raw')} send-proxy`,
        ].join('\n'),
        [ports.tls, ports.tcp],
      ),
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('curl through haproxy (TLS, send-proxy-v2) to an http endpoint: hooks and audit see curl and the TLVs', async () => {
    seen.length = 0;
    const r = await execFileAsync('curl', [
      '-sS',
      '--proxy',
      `https://localhost:${ports.tls}`,
      '--proxy-insecure',
      '-w',
      '\n%{local_port}',
      `${upstream.origin}/hi`,
    ]);
    const [body, localPort] = r.stdout.split('\n');
    assert.equal(body, 'hello via haproxy');
    const curlAddr = `127.0.0.1:${localPort}`;
    const conn = seen.find((s) => s.client === curlAddr);
    assert.ok(conn, `the ingress hook saw curl (${curlAddr}): ${JSON.stringify(seen.map((s) => s.client))}`);
    assert.notEqual(conn.peer, curlAddr, 'the socket peer is haproxy');
    const types = conn.header?.tlvs.map((t) => t.type) ?? [];
    for (const t of ['ssl', 'unique_id', 'authority'])
      assert.ok(types.includes(t as never), `TLV ${t} in ${types}`);
    const rec = await recordWhere(app, (x) => x.client === curlAddr);
    assert.equal(rec.kind, 'request');
    assert.equal(rec.peer, conn.peer);
    assert.equal(rec.proxy_protocol?.version, 2);
    assert.equal(rec.proxy_protocol?.tlvs.authority, 'localhost');
    assert.equal(rec.proxy_protocol?.tlvs.ssl?.client_ssl, true);
    assert.ok(rec.proxy_protocol?.tlvs.unique_id);
  });

  test('a client through haproxy (send-proxy, v1) to a tcp endpoint: the tunnel record names the client', async () => {
    const s = net.connect(ports.tcp, '127.0.0.1');
    await once(s, 'connect');
    const clientAddr = `127.0.0.1:${s.localPort}`;
    s.write('over v1');
    assert.equal((await readBytes(s, 7)).toString(), 'over v1');
    s.destroy();
    const rec = await recordWhere(app, (x) => x.kind === 'tunnel' && x.client === clientAddr);
    assert.equal(rec.upstream, echo.authority);
    assert.equal(rec.proxy_protocol?.version, 1);
  });
});

test('curl --haproxy-protocol straight at an http endpoint', { skip: missingL4Peers('curl') }, async () => {
  const app = await start({ web: { protocol: 'http', addr: '127.0.0.1:0', ...pp } });
  const r = await execFileAsync('curl', [
    '-sS',
    '--haproxy-protocol',
    '-x',
    `http://${app.address('web')}`,
    '-w',
    '\n%{local_port}',
    `${upstream.origin}/hi`,
  ]);
  const [body, localPort] = r.stdout.split('\n');
  assert.equal(body, 'hello via haproxy');
  const rec = await recordWhere(app, (x) => x.client === `127.0.0.1:${localPort}`);
  assert.equal(rec.proxy_protocol?.version, 1);
});

test('a tcp endpoint without a target goes to the header destination; early bytes are kept', async () => {
  const app = await start({ raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: null }, ...pp } });
  const [host, port] = app.address('raw').split(':');
  const s = net.connect(Number(port), host);
  await once(s, 'connect');
  const header = encodeProxyHeader(
    {
      addresses: {
        family: 'inet',
        source: { host: '192.0.2.9', port: 4321 },
        destination: { host: '127.0.0.1', port: echo.port },
      },
    },
    { version: 2 },
  );
  s.write(Buffer.concat([header, Buffer.from('right behind the header')]));
  assert.equal((await readBytes(s, 23)).toString(), 'right behind the header');
  s.destroy();
  const rec = await recordWhere(app, (x) => x.client === '192.0.2.9:4321');
  assert.equal(rec.upstream, echo.authority);
});

test('untrusted senders and malformed headers are closed unread, and the next client is served', async () => {
  const app = await start({
    strict: {
      protocol: 'tcp',
      addr: '127.0.0.1:0',
      tcp: { target: echo.authority },
      proxy_protocol: { enabled: true, trusted_cidrs: [] },
    },
    raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: echo.authority }, ...pp },
  });
  for (const [name, bytes] of [
    ['strict', Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nhello')],
    ['raw', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ['raw', Buffer.from('PROXY TCP4 999.0.2.1 127.0.0.1 1 2\r\n')],
  ] as const) {
    const [host, port] = app.address(name).split(':');
    const s = net.connect(Number(port), host);
    s.on('error', () => {});
    s.write(bytes);
    s.resume();
    await once(s, 'close');
  }
  assert.equal(
    app.auditRecords().filter((r) => r.kind === 'tunnel').length,
    0,
    'nothing reached an upstream',
  );
  const [host, port] = app.address('raw').split(':');
  const ok = net.connect(Number(port), host);
  ok.write(Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 1111 2222\r\n'), Buffer.from('fine')]));
  assert.equal((await readBytes(ok, 4)).toString(), 'fine');
  ok.destroy();
});

describe('PROXY headers before datagrams on a udp endpoint', () => {
  const echoUdp = dgram.createSocket('udp4');
  before(async () => {
    echoUdp.on('message', (m, from) => echoUdp.send(m, from.port, from.address));
    echoUdp.bind(0, '127.0.0.1');
    await once(echoUdp, 'listening');
  });
  after(() => echoUdp.close());

  for (const format of ['v2', 'spp'] as const) {
    test(`${format}: the session is the header's client, the reply carries the swapped header`, async () => {
      const app = await start({
        [`u${format}`]: {
          protocol: 'udp',
          addr: '127.0.0.1:0',
          udp: { target: `127.0.0.1:${echoUdp.address().port}`, idle_timeout: '300ms' },
          proxy_protocol: { enabled: true, udp_format: format },
        },
      });
      const port = Number(app.address(`u${format}`).split(':').at(-1));
      const client = { host: '198.51.100.4', port: 5353 };
      const front = { host: '127.0.0.1', port };
      const head = datagramHeader(format, client, front);
      const s = dgram.createSocket('udp4');
      s.bind(0, '127.0.0.1');
      await once(s, 'listening');
      s.send(Buffer.concat([head, Buffer.from('ping')]), port, '127.0.0.1');
      const [reply] = (await once(s, 'message')) as [Buffer];
      s.close();
      const back = format === 'spp' ? decodeSpp(reply) : decodeV2(reply);
      assert.equal(reply.subarray(back.length).toString(), 'ping');
      assert.deepEqual(back.addresses?.source, front);
      assert.deepEqual(back.addresses?.destination, client);
      const rec = await recordWhere(app, (x) => x.kind === 'udp_session' && x.client === '198.51.100.4:5353');
      assert.equal(rec.datagrams_up, 1);
      assert.equal(rec.proxy_protocol?.version, format === 'spp' ? 'spp' : 2);
    });
  }

  test('spp: bursts with malformed headers among them: the others go up in order, whole, and are counted', async () => {
    const app = await start({
      burst: {
        protocol: 'udp',
        addr: '127.0.0.1:0',
        udp: { target: `127.0.0.1:${echoUdp.address().port}`, idle_timeout: '300ms' },
        proxy_protocol: { enabled: true, udp_format: 'spp' },
      },
    });
    const port = Number(app.address('burst').split(':').at(-1));
    const client = { host: '198.51.100.9', port: 4000 };
    const head = encodeSpp(client, { host: '127.0.0.1', port });
    const bad = Buffer.from(head);
    bad[0] = 0; // not SPP's magic: dropped, and the run around it is cut there
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1');
    await once(s, 'listening');
    const got: number[] = [];
    s.on('message', (m: Buffer) => got.push(m.readUInt16BE(decodeSpp(m).length)));
    const good: number[] = [];
    let bytes = 0;
    for (let burst = 0; burst < 10; burst++) {
      for (let i = 0; i < 30; i++) {
        const seq = burst * 30 + i;
        const body = Buffer.alloc(seq % 5 === 0 ? 40 : 200, 1);
        body.writeUInt16BE(seq, 0);
        const malformed = seq % 7 === 3;
        if (!malformed) {
          good.push(seq);
          bytes += body.length;
        }
        s.send(Buffer.concat([malformed ? bad : head, body]), port, '127.0.0.1');
      }
      await waitUntil(() => got.length === good.length, `the echoes of burst ${burst}`);
    }
    s.close();
    assert.deepEqual(got, good);
    const rec = await recordWhere(app, (x) => x.kind === 'udp_session' && x.client === '198.51.100.9:4000');
    assert.equal(rec.datagrams_up, good.length);
    assert.equal(rec.bytes_up, bytes);
    assert.equal(rec.datagrams_down, good.length);
  });
});

describe("the off-ramp: nginx behind Oxy reads the client from Oxy's header", {
  skip: missingL4Peers('nginx'),
}, () => {
  for (const version of [1, 2] as const) {
    test(`PROXY v${version} to nginx stream (proxy_protocol on)`, async () => {
      const port = await freePort();
      peers.push(
        await startNginxStream(
          `  server { listen 127.0.0.1:${port} proxy_protocol; return "$proxy_protocol_addr:$proxy_protocol_port\\n"; }`,
          [port],
        ),
      );
      const app = await start(
        { raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: `127.0.0.1:${port}` } } },
        {
          egress: {
            handleConnection: (t: { host: string; port: number }) =>
              EgressDecision.direct(t, { proxyProtocol: { version } }),
          },
        },
      );
      const [host, p] = app.address('raw').split(':');
      const s = net.connect(Number(p), host);
      await once(s, 'connect');
      const line = (await readBytes(s, `127.0.0.1:${s.localPort}\n`.length)).toString();
      assert.equal(line, `127.0.0.1:${s.localPort}\n`);
      s.destroy();
    });
  }
});

describe('the off-ramp by settings: tcp.send_proxy_protocol, with no hook', {
  skip: missingL4Peers('nginx'),
}, () => {
  /** nginx answering each connection with the client its PROXY header names. */
  async function nginxSayingClient(): Promise<number> {
    const port = await freePort();
    peers.push(
      await startNginxStream(
        `  server { listen 127.0.0.1:${port} proxy_protocol; return "$proxy_protocol_addr:$proxy_protocol_port\\n"; }`,
        [port],
      ),
    );
    return port;
  }

  /** An app with no hooks at all, so the fast paths (the addon's accept) would apply. */
  async function plain(tcp: Record<string, unknown>): Promise<AppUnderTest> {
    const app = await startApp(hooksApp({}), {
      settings: { endpoints: { main: {}, raw: { protocol: 'tcp', addr: '127.0.0.1:0', ...tcp } } },
    });
    opened.push(app);
    return app;
  }

  for (const version of ['v1', 'v2'] as const) {
    test(`send_proxy_protocol: ${version}: nginx reads the client's own address`, async () => {
      const port = await nginxSayingClient();
      const app = await plain({ tcp: { target: `127.0.0.1:${port}`, send_proxy_protocol: version } });
      const [host, p] = app.address('raw').split(':');
      for (let i = 0; i < 3; i++) {
        const s = net.connect(Number(p), host);
        await once(s, 'connect');
        const want = `127.0.0.1:${s.localPort}\n`;
        assert.equal((await readBytes(s, want.length)).toString(), want);
        s.destroy();
      }
    });
  }

  test('a received header passes on: curl-style v1 in, v2 out, nginx sees the first client', async () => {
    const port = await nginxSayingClient();
    const app = await plain({
      tcp: { target: `127.0.0.1:${port}`, send_proxy_protocol: 'v2' },
      proxy_protocol: { enabled: true },
    });
    const [host, p] = app.address('raw').split(':');
    const s = net.connect(Number(p), host);
    await once(s, 'connect');
    s.write('PROXY TCP4 198.51.100.7 127.0.0.1 4242 9000\r\n');
    const want = '198.51.100.7:4242\n';
    assert.equal((await readBytes(s, want.length)).toString(), want);
    s.destroy();
    const rec = await recordWhere(app, (r) => r.kind === 'tunnel' && r.client === '198.51.100.7:4242');
    assert.equal(rec.proxy_protocol?.version, 1);
  });

  /** nginx answering each connection with the client and the destination its PROXY header names. */
  async function nginxSayingBoth(): Promise<number> {
    const port = await freePort();
    peers.push(
      await startNginxStream(
        `  server { listen 127.0.0.1:${port} proxy_protocol; return "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n"; }`,
        [port],
      ),
    );
    return port;
  }

  test("the destination is the address the client connected to, as HAProxy's send-proxy has it", async () => {
    const port = await nginxSayingBoth();
    const app = await plain({ tcp: { target: `127.0.0.1:${port}`, send_proxy_protocol: 'v1' } });
    const [host, p] = app.address('raw').split(':');
    const s = net.connect(Number(p), host);
    await once(s, 'connect');
    const want = `127.0.0.1 ${s.localPort} ${host} ${p}\n`;
    assert.equal((await readBytes(s, want.length)).toString(), want);
    s.destroy();
  });

  test('an IPv6 client to an IPv4 upstream keeps its address (TCP6), and a mapped IPv4 source goes out as TCP4', async () => {
    const port = await nginxSayingBoth();
    const app = await startApp(hooksApp({}), {
      settings: {
        endpoints: {
          main: {},
          six: {
            protocol: 'tcp',
            addr: '[::1]:0',
            tcp: { target: `127.0.0.1:${port}`, send_proxy_protocol: 'v2' },
          },
          mapped: {
            protocol: 'tcp',
            addr: '127.0.0.1:0',
            proxy_protocol: { enabled: true },
            tcp: { target: `127.0.0.1:${port}`, send_proxy_protocol: 'v1' },
          },
        },
      },
    });
    opened.push(app);
    const six = app.address('six');
    const sixPort = Number(six.slice(six.lastIndexOf(':') + 1));
    const a = net.connect(sixPort, '::1');
    await once(a, 'connect');
    const wantSix = `::1 ${a.localPort} ::1 ${sixPort}\n`;
    assert.equal((await readBytes(a, wantSix.length)).toString(), wantSix);
    a.destroy();
    const [host, p] = app.address('mapped').split(':');
    const b = net.connect(Number(p), host);
    await once(b, 'connect');
    b.write('PROXY TCP6 ::ffff:198.51.100.7 ::ffff:203.0.113.9 4242 443\r\n');
    const wantMapped = '198.51.100.7 4242 203.0.113.9 443\n';
    assert.equal((await readBytes(b, wantMapped.length)).toString(), wantMapped);
    b.destroy();
  });

  test("off (the default) sends nothing: an echo upstream returns exactly the client's bytes", async () => {
    const app = await plain({ tcp: { target: echo.authority } });
    const [host, p] = app.address('raw').split(':');
    const s = net.connect(Number(p), host);
    await once(s, 'connect');
    s.write('ping');
    assert.equal((await readBytes(s, 4)).toString(), 'ping');
    s.destroy();
  });
});

test('a header naming the endpoint itself, however spelled, is refused, not looped (send_proxy_protocol on)', async () => {
  const app = await start({
    raw: {
      protocol: 'tcp',
      addr: '127.0.0.1:0',
      tcp: { target: null, send_proxy_protocol: 'v1' },
      proxy_protocol: { enabled: true },
    },
  });
  const [host, p] = app.address('raw').split(':');
  // The address itself, the unspecified address (Linux connects it to loopback) and the
  // IPv4-mapped form: each reaches this listener.
  const headers = [
    ['198.51.100.9:4242', `PROXY TCP4 198.51.100.9 ${host} 4242 ${p}\r\n`],
    ['198.51.100.9:4243', `PROXY TCP4 198.51.100.9 0.0.0.0 4243 ${p}\r\n`],
    ['[2001:db8::9]:4244', `PROXY TCP6 2001:db8::9 ::ffff:${host} 4244 ${p}\r\n`],
  ] as const;
  for (const [client, header] of headers) {
    const s = net.connect(Number(p), host);
    await once(s, 'connect');
    const closed = new Promise((resolve) => s.on('close', resolve));
    s.on('error', () => {}); // the refusal is a reset
    s.write(header);
    await closed;
    const rec = await recordWhere(app, (r) => r.kind === 'tunnel' && r.client === client);
    assert.equal(rec.close_reason, 'OXY_ERR_EGRESS_BLOCKED', header);
  }
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(
    app.auditRecords().filter((r) => r.kind === 'tunnel' && r.endpoint === 'raw').length,
    headers.length,
    'one record per connection, no chain of connections to itself',
  );
});

/**
 * Connection hooks that refuse by the client (the header's source): 192.0.2.66 blocked by the
 * PROXY protocol hook, 192.0.2.67 failed by a throwing ingress hook, 192.0.2.68 blocked by it.
 */
const refusingConnectionHooks = {
  proxyProtocol: {
    handleConnection: (h: ProxyHeader) =>
      h.addresses?.family === 'inet' && h.addresses.source.host === '192.0.2.66'
        ? IngressDecision.block('listed at the edge')
        : IngressDecision.allow(),
  },
  ingress: {
    handleConnection: (ctx: IngressContext) => {
      if (ctx.client.host === '192.0.2.67') throw new Error('policy store down');
      return ctx.client.host === '192.0.2.68'
        ? IngressDecision.block('not from there')
        : IngressDecision.allow();
    },
  },
};

test('connections the app refuses before any request are audited, with the hook and its reason', async () => {
  const app = await startApp(
    hooksApp({
      ...refusingConnectionHooks,
      egress: {
        handleConnection: (t: { host: string; port: number }) =>
          EgressDecision.block(`no tunnels to ${t.port}`),
      },
    }),
    {
      settings: {
        endpoints: {
          main: {},
          raw: { protocol: 'tcp', addr: '127.0.0.1:0', tcp: { target: echo.authority }, ...pp },
        },
      },
    },
  );
  opened.push(app);
  const [host, p] = app.address('raw').split(':');
  for (const source of ['192.0.2.66', '192.0.2.67', '192.0.2.68', '192.0.2.69']) {
    const s = net.connect(Number(p), host);
    await once(s, 'connect');
    const closed = new Promise((resolve) => s.on('close', resolve));
    s.on('error', () => {}); // a reset, for the refused ones
    s.write(`PROXY TCP4 ${source} 127.0.0.1 4000 ${p}\r\n`);
    await closed;
  }
  const by = (ip: string) => recordWhere(app, (r) => r.client === `${ip}:4000`);
  const edge = await by('192.0.2.66');
  assert.deepEqual(
    [
      edge.kind,
      edge.decisions,
      edge.close_reason,
      edge.block_reason,
      edge.request_id,
      edge.proxy_protocol?.version,
    ],
    ['connection', ['proxy_protocol:block'], 'blocked', 'listed at the edge', '', 1],
  );
  const failed = await by('192.0.2.67');
  assert.deepEqual(
    [failed.kind, failed.decisions, failed.close_reason],
    ['connection', ['ingress:failed'], 'OXY_ERR_HOOK_FAILED'],
  );
  assert.equal(failed.block_reason, undefined);
  const ingress = await by('192.0.2.68');
  assert.deepEqual(
    [ingress.kind, ingress.decisions, ingress.block_reason],
    ['connection', ['ingress:block'], 'not from there'],
  );
  // The header metrics name the endpoint.
  assert.match(await renderMetrics(), /proxy_protocol_headers_total\{endpoint="raw",version="1"\} [1-9]/);
  // Past both connection hooks, the egress hook's block is a tunnel record with its reason.
  const egress = await by('192.0.2.69');
  assert.equal(egress.kind, 'tunnel', JSON.stringify(egress));
  assert.equal(egress.block_reason, `no tunnels to ${echo.port}`, JSON.stringify(egress));
});

test('udp sessions the connection hooks refuse list the hook and its verdict in their records, as connections do', async () => {
  const refusing = hooksApp(refusingConnectionHooks);
  const app = await startApp(refusing, {
    settings: {
      endpoints: {
        main: {},
        u: {
          protocol: 'udp',
          addr: '127.0.0.1:0',
          udp: { target: '127.0.0.1:9', idle_timeout: '200ms' },
          proxy_protocol: { enabled: true, udp_format: 'v2' },
        },
      },
    },
  });
  opened.push(app);
  const port = Number(app.address('u').split(':').at(-1));
  const s = dgram.createSocket('udp4');
  for (const source of ['192.0.2.66', '192.0.2.67', '192.0.2.68']) {
    const head = datagramHeader('v2', { host: source, port: 4000 }, { host: '127.0.0.1', port });
    s.send(Buffer.concat([head, Buffer.from('x')]), port, '127.0.0.1');
  }
  const by = (ip: string) => recordWhere(app, (r) => r.kind === 'udp_session' && r.client === `${ip}:4000`);
  const decisions = [await by('192.0.2.66'), await by('192.0.2.67'), await by('192.0.2.68')].map(
    (r) => r.decisions,
  );
  s.close();
  assert.deepEqual(decisions, [['proxy_protocol:block'], ['ingress:failed'], ['ingress:block']]);
});
