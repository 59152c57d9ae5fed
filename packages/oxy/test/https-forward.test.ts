/**
 * `https://` absolute-form requests to the proxy (HTTP/1.1 `GET https://…` and HTTP/2
 * `:scheme https`): forwarded over verified TLS, and a 502 naming the reason when the origin's
 * certificate does not verify (never a downgrade).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type AppUnderTest,
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  rawConnect,
  readUntil,
  startApp,
} from '../src/testing/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-https-forward-'));
const originCa = await generateCertificateAuthority('Origin CA');
const originCaFile = join(dir, 'origin-ca.pem');
writeFileSync(originCaFile, originCa.certPem);

async function startOrigin(cert: { certPem: string; keyPem: string }) {
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) =>
    res.end(`origin saw ${req.method} ${req.url} over ${req.httpVersion}`),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

const origin = await startOrigin(
  await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'], issuer: originCa }),
);
const selfOrigin = await startOrigin(
  await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] }),
);
let oxy: AppUnderTest;

before(async () => {
  oxy = await startApp(hooksApp({}), { settings: { egress: { tls: { extra_ca: [originCaFile] } } } });
});

after(async () => {
  await oxy.stop();
  origin.server.close();
  selfOrigin.server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('https:// absolute-form requests', () => {
  test('HTTP/1.1: forwarded over verified TLS', async () => {
    const s = rawConnect(
      oxy.address(),
      `GET https://localhost:${origin.port}/abs HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`,
    );
    const text = await readUntil(s, /over 1\.1$/);
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /origin saw GET \/abs over 1\.1$/);
    s.destroy();
  });

  test('HTTP/1.1: an origin that does not verify is a 502 naming the reason', async () => {
    const s = rawConnect(
      oxy.address(),
      `GET https://localhost:${selfOrigin.port}/ HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`,
    );
    const text = await readUntil(s, /\n$/);
    assert.match(text, /^HTTP\/1\.1 502/);
    assert.match(text, /certificate verification failed/);
    s.destroy();
  });

  test('HTTP/2 :scheme https', async () => {
    const session = http2.connect(`http://${oxy.address()}`);
    session.on('error', () => {});
    try {
      const req = session.request({
        ':method': 'GET',
        ':scheme': 'https',
        ':authority': `localhost:${origin.port}`,
        ':path': '/h2',
      });
      const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      let body = '';
      for await (const c of req) body += c;
      assert.equal(h[':status'], 200);
      assert.equal(body, 'origin saw GET /h2 over 1.1');
    } finally {
      session.close();
    }
  });
});
