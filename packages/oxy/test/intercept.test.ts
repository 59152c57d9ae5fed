/**
 * HTTPS interception end to end with the building blocks, run from an app's tunnel pipeline
 * (the HTTP engine takes this place later): curl through a real CONNECT with only the exported
 * interception CA trusted reaches an HTTPS origin started here, over HTTP/1.1 and HTTP/2 and
 * to an IP literal without SNI; an origin whose CA is not configured is answered 502 with the
 * reason inside the client's TLS; hosts outside `interception.hosts` pass through untouched;
 * TLS garbage, a truncated ClientHello and a bad SNI fail their tunnel only.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { trustOf, type UpstreamTrust } from '../src/offramps/tls/connect.ts';
import {
  connectTunnel,
  connectTunnelH2,
  curl,
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  startApp,
  waitUntil,
} from '../src/testing/index.ts';
import {
  type Interception,
  type InterceptOutcome,
  interceptTunnel,
  loadInterception,
} from '../src/tunnels/tls-intercept/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-intercept-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The origin: HTTPS with HTTP/2 and HTTP/1.1, certified by a CA only `extra_ca` knows.
const originCa = await generateCertificateAuthority('Origin CA');
const originCert = await generateCertificate({
  dnsNames: ['localhost'],
  ips: ['127.0.0.1'],
  issuer: originCa,
});
const origin = http2.createSecureServer(
  { cert: originCert.certPem, key: originCert.keyPem, allowHTTP1: true },
  (req, res) => {
    res.end(`hello from origin over ${req.httpVersion}`);
  },
);
origin.listen(0, '127.0.0.1');
await once(origin, 'listening');
const originPort = (origin.address() as net.AddressInfo).port;
after(() => origin.close());

const settings = (hosts: string[]) => ({
  enabled: true,
  hosts,
  ca: { cert: '', key: '', dir: join(dir, 'ca') },
  leaf_cache_size: 16,
  session_tickets: 0,
});
const interception = (await loadInterception(settings([]))) as Interception;
const onlyExample = (await loadInterception(settings(['*.example']))) as Interception;
const caFile = join(dir, 'interception-ca.pem');
writeFileSync(caFile, interception.ca.certPem);
const originCaFile = join(dir, 'origin-ca.pem');
writeFileSync(originCaFile, originCa.certPem);

const outcomes: (InterceptOutcome | Error)[] = [];
function proxyWith(chosen: Interception, trust: UpstreamTrust) {
  return startApp(
    hooksApp({
      tunnel: {
        getAppTunnelPipeline: (ctx) => (client, upstream) =>
          interceptTunnel(client, upstream, {
            interception: chosen,
            trust,
            target: ctx.target,
            timeoutMs: 2000,
          }).then(
            (o) => void outcomes.push(o),
            (e: Error) => void outcomes.push(e),
          ),
      },
    }),
  );
}
const trusting = await proxyWith(interception, trustOf([originCa.certPem]));
const untrusting = await proxyWith(interception, trustOf([]));
const selective = await proxyWith(onlyExample, trustOf([originCa.certPem]));
after(() => Promise.all([trusting.stop(), untrusting.stop(), selective.stop()]));

const viaProxy = (proxy: { address(): string }, url: string, ...args: string[]) =>
  curl(['-x', `http://${proxy.address()}`, ...args, url]);

/**
 * The first outcome since `before` that `pred` accepts (tunnels of earlier tests may end late,
 * so the newest outcome is not necessarily this test's).
 */
async function outcome(
  before: number,
  pred: (o: InterceptOutcome | Error) => boolean,
): Promise<InterceptOutcome | Error> {
  let found: InterceptOutcome | Error | undefined;
  await waitUntil(() => {
    found = outcomes.slice(before).find(pred);
    return found !== undefined;
  }, 'the tunnel ended');
  return found as InterceptOutcome | Error;
}
const intercepted = (o: InterceptOutcome | Error) => !(o instanceof Error) && o.kind === 'intercepted';
const lastOutcome = (before: number) => outcome(before, intercepted);

describe('curl with only the interception CA trusted', () => {
  test('HTTP/2 inside the tunnel, leaf for the SNI', async () => {
    const before = outcomes.length;
    const r = await viaProxy(trusting, `https://localhost:${originPort}/`, '--cacert', caFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from origin over 2.0');
    assert.deepEqual(await lastOutcome(before), { kind: 'intercepted', serverName: 'localhost', alpn: 'h2' });
  });

  test('HTTP/1.1 inside the tunnel', async () => {
    const before = outcomes.length;
    const r = await viaProxy(trusting, `https://localhost:${originPort}/`, '--cacert', caFile, '--http1.1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from origin over 1.1');
    assert.deepEqual(await lastOutcome(before), {
      kind: 'intercepted',
      serverName: 'localhost',
      alpn: 'http/1.1',
    });
  });

  test('an IP literal target (no SNI): the leaf carries the IP', async () => {
    const before = outcomes.length;
    const r = await viaProxy(trusting, `https://127.0.0.1:${originPort}/`, '--cacert', caFile);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from origin over 2.0');
    await waitUntil(
      () =>
        outcomes
          .slice(before)
          .some((o) => !(o instanceof Error) && o.kind === 'intercepted' && o.serverName === null),
      'an intercepted tunnel without SNI',
    );
  });

  test('without the CA, curl refuses the minted leaf', async () => {
    const r = await viaProxy(trusting, `https://localhost:${originPort}/`, '--cacert', originCaFile);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /certificate/i);
  });
});

test('through an HTTP/2 CONNECT stream too (the tunnel is any duplex)', async () => {
  const t = await connectTunnelH2(trusting.address(), `localhost:${originPort}`);
  assert.equal(t.status, 200);
  try {
    const secure = tls.connect({
      socket: t.stream,
      servername: 'localhost',
      ca: interception.ca.certPem,
      ALPNProtocols: ['http/1.1'],
    });
    await once(secure, 'secureConnect');
    assert.equal(
      secure.getPeerX509Certificate()?.issuer,
      new X509Certificate(interception.ca.certPem).subject,
    );
    secure.write('GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    let text = '';
    for await (const chunk of secure) text += (chunk as Buffer).toString();
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /hello from origin over 1\.1$/);
  } finally {
    t.session.close();
  }
});

test('an origin whose CA is not configured: 502 with the reason, no downgrade', async () => {
  const before = outcomes.length;
  const r = await viaProxy(
    untrusting,
    `https://localhost:${originPort}/`,
    '--cacert',
    caFile,
    '-w',
    '%{http_code}',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^502 Bad Gateway: TLS to localhost:\d+ failed: certificate verification failed: UNABLE_TO_/,
  );
  assert.match(r.stdout, /502$/);
  const o = (await outcome(
    before,
    (x) => !(x instanceof Error) && x.kind === 'origin_failed',
  )) as InterceptOutcome;
  assert.equal(o.kind, 'origin_failed');
});

test('a host outside interception.hosts passes through: the client sees the origin itself', async () => {
  const before = outcomes.length;
  const r = await viaProxy(selective, `https://localhost:${originPort}/`, '--cacert', originCaFile);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello from origin over 2.0');
  assert.deepEqual(await outcome(before, (o) => !(o instanceof Error) && o.kind === 'passthrough'), {
    kind: 'passthrough',
    serverName: 'localhost',
  });
});

describe('bad ClientHellos fail their tunnel only', () => {
  const hello = (sni: string) => {
    const name = Buffer.from(sni, 'latin1');
    const ext = Buffer.concat([
      Buffer.from([0, 0, 0, name.length + 5, 0, name.length + 3, 0, 0, name.length]),
      name,
    ]);
    const body = Buffer.concat([
      Buffer.from([3, 3]),
      Buffer.alloc(32),
      Buffer.from([0, 0, 2, 0x13, 1, 1, 0, 0, ext.length]),
      ext,
    ]);
    const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
    return Buffer.concat([Buffer.from([22, 3, 1, hs.length >> 8, hs.length & 0xff]), hs]);
  };
  const cases: [string, Buffer, boolean][] = [
    ['TLS garbage', Buffer.from('this is not TLS at all\r\n'), false],
    ['a truncated ClientHello', hello('localhost').subarray(0, 30), true],
    ['an SNI with invalid characters', hello('bad name/.example'), false],
  ];
  for (const [name, bytes, endAfter] of cases) {
    test(`${name}: the tunnel closes with OXY_ERR_TLS_CLIENT_HELLO, the next client is served`, async () => {
      const before = outcomes.length;
      const t = await connectTunnel(trusting.address(), `localhost:${originPort}`);
      assert.equal(t.status, 200);
      t.socket.on('error', () => {});
      if (endAfter) t.socket.end(bytes);
      else t.socket.write(bytes);
      await once(t.socket, 'close');
      const o = await outcome(
        before,
        (x) => x instanceof Error && x.message.startsWith('bad TLS ClientHello'),
      );
      assert.ok(
        o instanceof Error && (o as { code?: string }).code === 'OXY_ERR_TLS_CLIENT_HELLO',
        String(o),
      );
      const r = await viaProxy(trusting, `https://localhost:${originPort}/`, '--cacert', caFile);
      assert.equal(r.stdout, 'hello from origin over 2.0');
    });
  }
});

describe('start-up', () => {
  test('interception on: the CA is generated before the endpoints listen', async () => {
    const caDir = join(dir, 'startup-ca');
    const app = await startApp(hooksApp(), {
      settings: { interception: { enabled: true, hosts: ['*.example'], ca: { dir: caDir } } },
    });
    try {
      const rt = app.proxy.runtime;
      assert.ok(rt.interception !== null);
      assert.equal(rt.interception.ca.source, 'generated');
      assert.ok(
        rt.interception.shouldIntercept('a.example', 'x') && !rt.interception.shouldIntercept(null, 'b.test'),
      );
    } finally {
      await app.stop();
    }
  });

  test('bad interception.hosts, ca and egress.tls.extra_ca fail the start, naming the key', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { interception: { enabled: true, hosts: ['ok.example', 'bad host'], ca: { dir: join(dir, 'x') } } },
        /interception\.hosts\[1\]/,
      ],
      [
        {
          interception: {
            enabled: true,
            ca: { cert: join(dir, 'absent.pem'), key: join(dir, 'absent.pem') },
          },
        },
        /interception\.ca\.cert/,
      ],
      [{ egress: { tls: { extra_ca: [join(dir, 'absent.pem')] } } }, /egress\.tls\.extra_ca\[0\]/],
    ];
    for (const [settings, message] of cases) {
      await assert.rejects(startApp(hooksApp(), { settings }), message);
    }
  });
});
