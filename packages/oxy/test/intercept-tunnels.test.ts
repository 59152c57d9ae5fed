/**
 * HTTPS interception wired into CONNECT tunnels, from settings alone and from
 * `TunnelHook.handleTunnelStart`, with real clients: curl with only the exported CA trusted
 * (HTTP/1.1 and HTTP/2 inside), the audit linking each intercepted request to its tunnel, an
 * HTTP/2 CONNECT, `interception.hosts` (the client sees the origin's own certificate when passed
 * through), an origin whose certificate does not verify (502 with the reason) unless its CA is in
 * `egress.tls.extra_ca`, TLS garbage, a truncated ClientHello and a bad SNI (that tunnel fails,
 * the next client is served), and plain HTTP inside a tunnel. (`https://` absolute-form
 * requests: https-forward.test.ts.)
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { RequestDecision, TunnelDecision, type TunnelStart } from '../src/index.ts';
import {
  type AppUnderTest,
  captureTelemetry,
  connectTunnel,
  connectTunnelH2,
  curl,
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  startApp,
  waitForClose,
} from '../src/testing/index.ts';

const tele = captureTelemetry({ verbosity: 'INFO' });
const dir = mkdtempSync(join(tmpdir(), 'oxy-intercept-tunnels-'));
const caDir = join(dir, 'ca');

const originCa = await generateCertificateAuthority('Origin CA');
const originCert = await generateCertificate({
  dnsNames: ['localhost'],
  ips: ['127.0.0.1'],
  issuer: originCa,
});
const selfSigned = await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
const originCaFile = join(dir, 'origin-ca.pem');
writeFileSync(originCaFile, originCa.certPem);
const selfSignedFile = join(dir, 'self-signed.pem');
writeFileSync(selfSignedFile, selfSigned.certPem);

/** An HTTPS origin (HTTP/1.1 only: what the pipeline speaks upstream) answering with what it saw. */
async function startOrigin(cert: { certPem: string; keyPem: string }) {
  const seen: string[] = [];
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    seen.push(`${req.method} ${req.url}`);
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', () =>
      res.end(`origin saw ${req.method} ${req.url} over ${req.httpVersion}${body ? ` body=${body}` : ''}`),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, seen, port: (server.address() as net.AddressInfo).port };
}

const origin = await startOrigin(originCert);
const selfOrigin = await startOrigin(selfSigned);
const plainOrigin = http.createServer((req, res) => res.end(`plain origin saw ${req.url}`));
plainOrigin.listen(0, '127.0.0.1');
await once(plainOrigin, 'listening');
const plainPort = (plainOrigin.address() as net.AddressInfo).port;

const interception = (hosts: string[]) => ({
  enabled: true,
  hosts,
  ca: { cert: '', key: '', dir: caDir },
});

let all: AppUnderTest;
let selective: AppUnderTest;
let trustingSelf: AppUnderTest;
let hooked: AppUnderTest;
let tlsEndpoint: AppUnderTest;
let filtering: AppUnderTest;
const seenKinds: string[] = [];
const proxyCaFile = join(dir, 'proxy-ca.pem');
const starts: TunnelStart[] = [];
const caFile = join(dir, 'oxy-ca.pem');

before(async () => {
  const egress = { tls: { extra_ca: [originCaFile] } };
  all = await startApp(hooksApp({}), { settings: { interception: interception([]), egress } });
  selective = await startApp(hooksApp({}), {
    settings: { interception: interception(['127.0.0.1']), egress },
  });
  trustingSelf = await startApp(hooksApp({}), {
    settings: {
      interception: interception([]),
      egress: { tls: { extra_ca: [originCaFile, selfSignedFile] } },
    },
  });
  // The hook decides from the first bytes alone; no interception settings needed for http().
  hooked = await startApp(
    hooksApp({
      tunnel: {
        handleTunnelStart: (first) => {
          starts.push(first);
          if (first.kind === 'http') return TunnelDecision.http();
          if (first.serverName === 'blocked.test') return TunnelDecision.block('test block');
          if (first.serverName === 'throws.test') throw new Error('hook bug');
          // No interception settings in this app: intercept() cannot be served.
          if (first.serverName === 'intercept.test') return TunnelDecision.intercept();
          if (first.kind === 'other') return TunnelDecision.http();
          return TunnelDecision.passThrough();
        },
      },
    }),
  );
  // The request hook sees intercepted requests like plain ones, and may answer them itself.
  filtering = await startApp(
    hooksApp({
      httpRequest: {
        handleRequest: (head, ctx) => {
          seenKinds.push(`${ctx.kind} ${head.method} ${head.path} parent=${ctx.parentId !== null}`);
          return head.path === '/secret'
            ? RequestDecision.block(403, 'no secrets')
            : RequestDecision.forward();
        },
      },
    }),
    { settings: { interception: interception([]), egress } },
  );
  // A TLS endpoint: curl reaches the proxy itself over TLS, then intercepted TLS inside.
  const proxyCa = await generateCertificateAuthority('Proxy CA');
  const proxyCert = await generateCertificate({
    dnsNames: ['localhost'],
    ips: ['127.0.0.1'],
    issuer: proxyCa,
  });
  writeFileSync(proxyCaFile, proxyCa.certPem);
  writeFileSync(join(dir, 'proxy.pem'), proxyCert.certPem);
  writeFileSync(join(dir, 'proxy-key.pem'), proxyCert.keyPem);
  tlsEndpoint = await startApp(hooksApp({}), {
    settings: {
      endpoints: {
        main: { tls: { enabled: true, cert: join(dir, 'proxy.pem'), key: join(dir, 'proxy-key.pem') } },
      },
      interception: interception([]),
      egress,
    },
  });
  // `oxy ca export` prints the CA the proxy generated into ca.dir (the same files).
  writeFileSync(caFile, all.proxy.runtime.interception?.ca.certPem ?? '');
});

after(async () => {
  await Promise.all([
    all.stop(),
    selective.stop(),
    trustingSelf.stop(),
    hooked.stop(),
    tlsEndpoint.stop(),
    filtering.stop(),
  ]);
  origin.server.close();
  selfOrigin.server.close();
  plainOrigin.close();
  rmSync(dir, { recursive: true, force: true });
  tele.stop();
});

const via = (proxy: AppUnderTest, url: string, ...args: string[]) =>
  curl(['-x', `http://${proxy.address()}`, ...args, url]);

describe('interception.enabled, every tunnel', () => {
  test('curl over HTTP/1.1 inside, with only the exported CA: the audit links the request to its tunnel', async () => {
    const before = all.auditRecords().length;
    const r = await via(all, `https://localhost:${origin.port}/a?b=1`, '--cacert', caFile, '--http1.1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw GET /a?b=1 over 1.1');
    const records = await all.waitForAudit(before + 2);
    const inner = records.slice(before).find((x) => x.request_kind === 'intercepted');
    const tunnel = records.slice(before).find((x) => x.request_kind === 'connect');
    assert.ok(inner !== undefined && tunnel !== undefined, JSON.stringify(records.slice(before)));
    assert.equal(inner.parent_request_id, tunnel.request_id);
    assert.equal(inner.status, 200);
    assert.equal(inner.target, `localhost:${origin.port}`);
    assert.deepEqual(tunnel.decisions.includes('tunnel:intercept'), true);
    assert.equal(tunnel.close_reason, 'done');
  });

  test('curl --http2 inside: h2 to the client, HTTP/1.1 to the origin, a POST body through', async () => {
    const r = await via(
      all,
      `https://localhost:${origin.port}/post`,
      '--cacert',
      caFile,
      '--http2',
      '-d',
      'x=1',
      '-w',
      ' %{http_version}',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw POST /post over 1.1 body=x=1 2');
  });

  test('several requests on one intercepted keep-alive connection', async () => {
    const url = `https://localhost:${origin.port}/k`;
    const r = await via(all, url, '--cacert', caFile, '--http1.1', url, url);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw GET /k over 1.1'.repeat(3));
  });

  test('an IP literal target without SNI: the leaf carries the IP', async () => {
    const r = await via(all, `https://127.0.0.1:${origin.port}/ip`, '--cacert', caFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw GET /ip over 1.1');
  });

  test('through an HTTP/2 CONNECT stream', async () => {
    const t = await connectTunnelH2(all.address(), `localhost:${origin.port}`);
    assert.equal(t.status, 200);
    try {
      const secure = tls.connect({
        socket: t.stream,
        servername: 'localhost',
        ca: readCa(),
        ALPNProtocols: ['http/1.1'],
      });
      await once(secure, 'secureConnect');
      assert.equal(secure.getPeerX509Certificate()?.issuer, new X509Certificate(readCa()).subject);
      secure.write('GET /h2c HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
      let text = '';
      for await (const chunk of secure) text += (chunk as Buffer).toString();
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.match(text, /origin saw GET \/h2c over 1\.1$/);
    } finally {
      t.session.close();
    }
  });

  test('HTTP/2 inside an HTTP/2 CONNECT stream', async () => {
    const t = await connectTunnelH2(all.address(), `localhost:${origin.port}`);
    assert.equal(t.status, 200);
    try {
      const inner = http2.connect(`https://localhost:${origin.port}`, {
        createConnection: () =>
          tls.connect({ socket: t.stream, servername: 'localhost', ca: readCa(), ALPNProtocols: ['h2'] }),
      });
      inner.on('error', () => {});
      const req = inner.request({ ':path': '/h2-in-h2' });
      const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      let body = '';
      for await (const c of req) body += c;
      assert.equal(h[':status'], 200);
      assert.equal(body, 'origin saw GET /h2-in-h2 over 1.1');
      inner.close();
    } finally {
      t.session.close();
    }
  });

  test('an origin whose certificate does not verify: 502 naming the reason inside the TLS, no downgrade', async () => {
    const before = selfOrigin.seen.length;
    const r = await via(
      all,
      `https://localhost:${selfOrigin.port}/`,
      '--cacert',
      caFile,
      '-w',
      ' %{http_code}',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^502 Bad Gateway: TLS to localhost:\d+ failed: certificate verification failed: \w+/,
    );
    assert.match(r.stdout, / 502$/);
    assert.equal(selfOrigin.seen.length, before, 'no request reached the origin');
  });

  test('the same origin with its certificate in egress.tls.extra_ca is served', async () => {
    const r = await via(trustingSelf, `https://localhost:${selfOrigin.port}/ok`, '--cacert', caFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw GET /ok over 1.1');
  });

  for (const [name, bytes] of [
    ['TLS garbage', Buffer.from('\x16\x03\x01\x00\x05hello, not a handshake', 'latin1')],
    ['a truncated ClientHello', clientHelloBytes('localhost').subarray(0, 60)],
    ['an SNI with invalid characters', clientHelloBytes('bad host!')],
  ] as const) {
    test(`${name}: that tunnel fails cleanly, counted and logged once, the next client is served`, async () => {
      const counted =
        (await tele.metricValue('interception_failures_total', { reason: 'client_hello' })) ?? 0;
      const logged = tele.logs.filter((l) => l.msg === 'inspected tunnel failed').length;
      const t = await connectTunnel(all.address(), `localhost:${origin.port}`);
      assert.equal(t.status, 200);
      t.socket.on('error', () => {});
      t.socket.end(bytes);
      await waitForClose(t.socket as net.Socket);
      const records = await all.waitForAudit(1);
      await waitFor(() =>
        all
          .auditRecords()
          .some(
            (x) => x.close_reason === 'OXY_ERR_TLS_CLIENT_HELLO' && x.request_id !== records[0]?.request_id,
          ),
      );
      assert.equal(
        await tele.metricValue('interception_failures_total', { reason: 'client_hello' }),
        counted + 1,
      );
      const logs = tele.logs.filter((l) => l.msg === 'inspected tunnel failed').slice(logged);
      assert.equal(logs.length, 1, JSON.stringify(logs));
      assert.equal(typeof logs[0]?.fields.conn_id, 'string', JSON.stringify(logs[0]));
      const r = await via(all, `https://localhost:${origin.port}/next`, '--cacert', caFile);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'origin saw GET /next over 1.1');
    });
  }
});

test('intercepted requests go through handleRequest (kind intercepted, with a parent) and may be blocked', async () => {
  const ok = await via(filtering, `https://localhost:${origin.port}/fine`, '--cacert', caFile);
  assert.equal(ok.stdout, 'origin saw GET /fine over 1.1', ok.stderr);
  const blocked = await via(
    filtering,
    `https://localhost:${origin.port}/secret`,
    '--cacert',
    caFile,
    '-w',
    ' %{http_code}',
  );
  assert.equal(blocked.code, 0, blocked.stderr);
  assert.match(blocked.stdout, /no secrets.* 403$/s);
  assert.deepEqual(seenKinds, ['intercepted GET /fine parent=true', 'intercepted GET /secret parent=true']);
});

describe('a TLS endpoint', () => {
  for (const [name, proxyTrust] of [
    ['--proxy-cacert', ['--proxy-cacert', proxyCaFile]],
    ['--proxy-insecure', ['--proxy-insecure']],
  ] as const) {
    test(`curl ${name} to the proxy, the interception CA for the origin`, async () => {
      const r = await curl([
        '--proxy',
        `https://localhost:${tlsEndpoint.address().split(':')[1]}`,
        ...proxyTrust,
        '--cacert',
        caFile,
        `https://localhost:${origin.port}/via-tls`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'origin saw GET /via-tls over 1.1');
    });
  }
});

describe('interception.hosts', () => {
  test('a matching CONNECT host is intercepted', async () => {
    const r = await via(selective, `https://127.0.0.1:${origin.port}/m`, '--cacert', caFile);
    assert.equal(r.code, 0, r.stderr);
  });

  test('a name that does not match passes through: the client sees the origin certificate', async () => {
    const r = await via(selective, `https://localhost:${origin.port}/p`, '--cacert', originCaFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'origin saw GET /p over 1.1');
    const refused = await via(selective, `https://localhost:${origin.port}/p`, '--cacert', caFile);
    assert.notEqual(refused.code, 0, 'the interception CA did not sign what the client saw');
  });
});

describe('TunnelHook.handleTunnelStart', () => {
  test('http(): plain HTTP inside a tunnel goes through the request pipeline as tunnelled', async () => {
    const before = hooked.auditRecords().length;
    const r = await via(hooked, `http://127.0.0.1:${plainPort}/inside`, '-p');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'plain origin saw /inside');
    const records = await hooked.waitForAudit(before + 2);
    const inner = records.slice(before).find((x) => x.request_kind === 'tunnelled');
    assert.ok(inner?.parent_request_id !== undefined, JSON.stringify(records.slice(before)));
    assert.deepEqual(starts.at(-1), { kind: 'http', serverName: null, alpn: [] });
  });

  test('the ClientHello is described; passThrough() keeps it intact; block() closes', async () => {
    const r = await via(hooked, `https://localhost:${origin.port}/t`, '--cacert', originCaFile, '--http1.1');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(starts.at(-1), { kind: 'tls', serverName: 'localhost', alpn: ['http/1.1'] });
    const t = await connectTunnel(hooked.address(), `localhost:${origin.port}`);
    t.socket.on('error', () => {});
    t.socket.write(clientHelloBytes('blocked.test'));
    await waitForClose(t.socket as net.Socket);
    await waitFor(() => hooked.auditRecords().some((x) => x.close_reason === 'blocked'));
  });
});

describe('TunnelHook.handleTunnelStart failures close that tunnel only', () => {
  for (const [name, bytes, reason] of [
    ['a throwing hook', clientHelloBytes('throws.test'), 'OXY_ERR_HOOK_FAILED'],
    ['intercept() without interception.enabled', clientHelloBytes('intercept.test'), 'OXY_ERR_BLOCKED'],
    ['http() for bytes that are not HTTP', Buffer.from([0, 1, 2, 3]), 'OXY_ERR_BLOCKED'],
  ] as const) {
    test(name, async () => {
      const t = await connectTunnel(hooked.address(), `127.0.0.1:${plainPort}`);
      assert.equal(t.status, 200);
      t.socket.on('error', () => {});
      t.socket.write(bytes);
      await waitForClose(t.socket as net.Socket);
      await waitFor(() => hooked.auditRecords().some((x) => x.close_reason === reason));
      const r = await via(hooked, `http://127.0.0.1:${plainPort}/after`, '-p');
      assert.equal(r.stdout, 'plain origin saw /after', r.stderr);
    });
  }
});

function readCa(): string {
  return all.proxy.runtime.interception?.ca.certPem ?? '';
}

async function waitFor(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A minimal TLS 1.2 ClientHello record with `serverName` as its SNI and ALPN http/1.1. */
function clientHelloBytes(serverName: string): Buffer {
  const name = Buffer.from(serverName, 'latin1');
  const sniList = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
  const sni = Buffer.concat([u16(0), u16(sniList.length + 2), u16(sniList.length), sniList]);
  const proto = Buffer.from('http/1.1');
  const alpnList = Buffer.concat([Buffer.from([proto.length]), proto]);
  const alpn = Buffer.concat([u16(16), u16(alpnList.length + 2), u16(alpnList.length), alpnList]);
  const exts = Buffer.concat([sni, alpn]);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    u16(2),
    Buffer.from([0xc0, 0x2f]),
    Buffer.from([1, 0]),
    u16(exts.length),
    exts,
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 255]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
}

function u16(n: number): Buffer {
  return Buffer.from([n >> 8, n & 255]);
}
