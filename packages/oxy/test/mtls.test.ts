/**
 * Client certificates (mTLS) on a TLS endpoint, with the reference clients: `openssl s_client`
 * with a valid certificate, an expired one, one from another CA and none, each against
 * `client_auth: optional` and `required`; curl through the endpoint as an HTTPS proxy with
 * `--proxy-cacert`/`--proxy-insecure` and `--proxy-cert`. The verified identity must reach the
 * request hooks (`ctx.ingress.clientIdentity`) and the audit record (`client_identity`), and
 * `TlsHook` must choose certificates per SNI and refuse identities.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import type { ClientIdentity } from '../src/context/contexts.ts';
import { isOxyError } from '../src/errors.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { CertificateChoice, ClientIdentityDecision } from '../src/hooks/tls.ts';
import { loadEndpointTls } from '../src/onramps/tls/credentials.ts';
import {
  curl,
  generateCertificate,
  generateCertificateAuthority,
  type HttpUpstream,
  hooksApp,
  startApp,
  startHttpUpstream,
  waitUntil,
} from '../src/testing/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-mtls-'));
after(() => rmSync(dir, { recursive: true, force: true }));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const server = await generateCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
const alt = await generateCertificate({ dnsNames: ['alt.test'], ips: [] });
const clientCa = await generateCertificateAuthority('Oxy client CA');
const secondCa = await generateCertificateAuthority('Oxy second client CA');
const otherCa = await generateCertificateAuthority('Untrusted CA');
const day = 86_400_000;
const certs = {
  valid: await generateCertificate({
    commonName: 'alice',
    dnsNames: ['alice.test'],
    ips: [],
    issuer: clientCa,
    purpose: 'client',
  }),
  second: await generateCertificate({
    commonName: 'bob',
    dnsNames: [],
    ips: [],
    issuer: secondCa,
    purpose: 'client',
  }),
  mallory: await generateCertificate({
    commonName: 'mallory',
    dnsNames: [],
    ips: [],
    issuer: clientCa,
    purpose: 'client',
  }),
  expired: await generateCertificate({
    commonName: 'old',
    dnsNames: [],
    ips: [],
    issuer: clientCa,
    purpose: 'client',
    notBefore: new Date(Date.now() - 10 * day),
    notAfter: new Date(Date.now() - day),
  }),
  foreign: await generateCertificate({
    commonName: 'eve',
    dnsNames: [],
    ips: [],
    issuer: otherCa,
    purpose: 'client',
  }),
};
const files = {
  cert: file('server.pem', server.certPem),
  key: file('server-key.pem', server.keyPem),
  serverCa: file('server-ca.pem', server.caPem),
  // Two CAs in one file: a certificate from either verifies.
  clientCa: file('client-ca.pem', clientCa.certPem + secondCa.certPem),
};
const clientFiles = (name: keyof typeof certs) => ({
  cert: file(`${name}.pem`, certs[name].certPem),
  key: file(`${name}-key.pem`, certs[name].keyPem),
});

const upstream: HttpUpstream = await startHttpUpstream({ 'GET /hello': { body: 'hello mtls' } });
const seen: (ClientIdentity | null)[] = [];
const identities: (ClientIdentity | null)[] = [];
const atAccept: (ClientIdentity | null)[] = [];
/** Close reasons of connections, by the client port (the ingress context's `client.port`). */
const closeReasons = new Map<number, string>();
const altCertificate = { cert: alt.certPem, key: alt.keyPem };
const app = () =>
  hooksApp({
    ingress: {
      // At accept, before the handshake: never an identity yet.
      handleConnection: (ctx) => {
        atAccept.push(ctx.clientIdentity);
        return IngressDecision.allow();
      },
      handleConnectionClose: (stats, ctx) => void closeReasons.set(ctx.client.port, stats.closeReason),
    },
    tls: {
      selectCertificate: (sni) =>
        sni === 'alt.test' ? CertificateChoice.use(altCertificate) : CertificateChoice.default(),
      handleClientIdentity: async (identity) => {
        identities.push(identity);
        return identity?.subject === 'CN=mallory'
          ? ClientIdentityDecision.refuse('mallory is not welcome')
          : ClientIdentityDecision.accept();
      },
    },
    httpRequest: {
      handleRequest: (_head, ctx) => {
        seen.push(ctx.ingress.clientIdentity);
        return { kind: 'forward' };
      },
    },
  });
const tlsSettings = (clientAuth: 'optional' | 'required') => ({
  settings: {
    endpoints: {
      main: {
        tls: {
          enabled: true,
          cert: files.cert,
          key: files.key,
          client_auth: clientAuth,
          client_ca: files.clientCa,
          handshake_timeout: '2s',
        },
      },
    },
  },
});
const proxies = {
  optional: await startApp(app(), tlsSettings('optional')),
  required: await startApp(app(), tlsSettings('required')),
};
after(async () => {
  await upstream.close();
  await Promise.all([proxies.optional.stop(), proxies.required.stop()]);
});

const request = `GET http://${upstream.authority}/hello HTTP/1.1\r\nHost: ${upstream.authority}\r\nConnection: close\r\n\r\n`;

/** `openssl s_client` sending one proxy request; resolves with what it printed. */
function sClient(port: number, extra: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'localhost',
      '-CAfile',
      files.serverCa,
      '-verify_return_error',
      '-quiet',
      ...extra,
    ]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`s_client did not finish: ${stderr}`));
    }, 8000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve({ stdout, stderr });
    });
    child.stdin.end(request);
  });
}

const portOf = (mode: keyof typeof proxies) => Number(proxies[mode].address().split(':').at(-1));

/** The close reason of the last connection the proxy closed with a failure. */
async function lastFailure(): Promise<string> {
  let reason: string | undefined;
  await waitUntil(() => {
    reason = [...closeReasons.values()].findLast((r) => r !== 'client_closed');
    return reason !== undefined;
  }, 'a failed connection closed');
  closeReasons.clear();
  return reason ?? '';
}

/** Each client, whether each mode serves it, and why it is refused. */
type Case = {
  readonly client: keyof typeof certs | 'none';
  readonly optional: boolean;
  readonly required: boolean;
  readonly reason?: RegExp;
};
const cases: Case[] = [
  { client: 'valid', optional: true, required: true },
  { client: 'second', optional: true, required: true },
  { client: 'expired', optional: false, required: false, reason: /^CERT_HAS_EXPIRED$/ },
  {
    client: 'foreign',
    optional: false,
    required: false,
    reason: /^UNABLE_TO_(GET_ISSUER_CERT|VERIFY_LEAF_SIGNATURE)/,
  },
  {
    client: 'none',
    optional: true,
    required: false,
    reason: /^(client_cert_missing|ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE)$/,
  },
];

for (const mode of ['optional', 'required'] as const) {
  describe(`openssl s_client against client_auth: ${mode}`, () => {
    for (const c of cases) {
      const served = c[mode];
      test(`${c.client === 'none' ? 'no certificate' : `${c.client} certificate`}: ${served ? 'served' : 'refused'}`, async () => {
        const before = proxies[mode].auditRecords().length;
        closeReasons.clear();
        const args =
          c.client === 'none'
            ? []
            : (() => {
                const f = clientFiles(c.client);
                return ['-cert', f.cert, '-key', f.key];
              })();
        const out = await sClient(portOf(mode), args);
        if (!served) {
          assert.doesNotMatch(out.stdout, /HTTP\/1\.1/, 'a refused client gets no HTTP answer');
          // Nothing was forwarded for it, and it was closed for the reason OpenSSL gave.
          assert.equal(proxies[mode].auditRecords().length, before);
          assert.match(await lastFailure(), c.reason ?? /never/);
          return;
        }
        assert.match(out.stdout, /^HTTP\/1\.1 200/);
        assert.match(out.stdout, /hello mtls/);
        const [record] = (await proxies[mode].waitForAudit(before + 1)).slice(before);
        if (c.client === 'none') {
          assert.equal(record?.client_identity, null);
          return;
        }
        const x509 = new X509Certificate(certs[c.client].certPem);
        assert.equal(record?.client_identity?.fingerprint_sha256, x509.fingerprint256);
        assert.equal(record?.client_identity?.subject, x509.subject);
        assert.equal(record?.client_identity?.issuer, x509.issuer);
        assert.equal(record?.client_identity?.not_after, x509.validToDate.toISOString());
        assert.equal(record?.client_identity?.serial, x509.serialNumber.toUpperCase());
        assert.deepEqual(seen.at(-1)?.fingerprintSha256, x509.fingerprint256);
        assert.deepEqual(identities.at(-1)?.fingerprintSha256, x509.fingerprint256);
        if (c.client === 'valid') assert.deepEqual(record?.client_identity?.sans, ['DNS:alice.test']);
      });
    }
  });
}

describe('TlsHook', () => {
  test('handleClientIdentity refuses an identity: the connection closes before any request', async () => {
    const before = proxies.required.auditRecords().length;
    closeReasons.clear();
    const f = clientFiles('mallory');
    const out = await sClient(portOf('required'), ['-cert', f.cert, '-key', f.key]);
    assert.doesNotMatch(out.stdout, /HTTP\/1\.1/);
    assert.equal(identities.at(-1)?.subject, 'CN=mallory');
    assert.equal(proxies.required.auditRecords().length, before);
    assert.equal(await lastFailure(), 'blocked');
    // The next client is served.
    const ok = clientFiles('valid');
    assert.match((await sClient(portOf('required'), ['-cert', ok.cert, '-key', ok.key])).stdout, /200/);
  });

  test('order on one connection: ingress, SNI certificate, identity, requests, close', async () => {
    const proxy = proxies.required;
    proxy.recorder.clear();
    const f = clientFiles('valid');
    assert.match((await sClient(portOf('required'), ['-cert', f.cert, '-key', f.key])).stdout, /200/);
    const [conn, ...others] = proxy.recorder.connections();
    assert.ok(conn !== undefined && others.length === 0, proxy.recorder.transcript());
    await proxy.recorder.waitFor(conn, 'ingress.handleConnectionClose');
    assert.deepEqual(proxy.recorder.hooksOf(conn), [
      'ingress.handleConnection',
      'tls.selectCertificate',
      'tls.handleClientIdentity',
      'http.handleRequest',
      'ingress.handleConnectionClose',
    ]);
    assert.ok(atAccept.length > 0 && atAccept.every((i) => i === null));
  });

  test('selectCertificate serves another certificate for its SNI, the default otherwise', async () => {
    const peerCn = (servername: string) =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({
          port: portOf('optional'),
          host: '127.0.0.1',
          servername,
          rejectUnauthorized: false,
        });
        s.once('secureConnect', () => {
          resolve(s.getPeerX509Certificate()?.subject ?? '');
          s.destroy();
        });
        s.once('error', reject);
      });
    assert.equal(await peerCn('alt.test'), 'CN=alt.test');
    assert.equal(await peerCn('localhost'), 'CN=localhost');
  });
});

test('HTTP/2 over mTLS (ALPN h2): the request hook sees the identity', async () => {
  const session = http2.connect(`https://localhost:${portOf('required')}`, {
    ca: server.caPem,
    cert: certs.second.certPem,
    key: certs.second.keyPem,
  });
  session.on('error', () => {});
  try {
    const req = session.request({
      ':method': 'GET',
      ':scheme': 'http',
      ':authority': upstream.authority,
      ':path': '/hello',
    });
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    await once(req, 'end');
    assert.equal(headers[':status'], 200);
    assert.equal(body, 'hello mtls');
    assert.equal(seen.at(-1)?.subject, 'CN=bob');
  } finally {
    session.close();
  }
});

describe('curl through a TLS endpoint (HTTPS proxy)', () => {
  const url = `http://${upstream.authority}/hello`;
  test('--proxy-cacert and --proxy-cert against required: served', async () => {
    const f = clientFiles('valid');
    const r = await curl([
      '--proxy',
      `https://localhost:${portOf('required')}`,
      '--proxy-cacert',
      files.serverCa,
      '--proxy-cert',
      f.cert,
      '--proxy-key',
      f.key,
      url,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello mtls');
    assert.equal(seen.at(-1)?.subject, 'CN=alice');
  });

  test('--proxy-insecure without a certificate: served by optional, refused by required', async () => {
    const opt = await curl(['--proxy', `https://127.0.0.1:${portOf('optional')}`, '--proxy-insecure', url]);
    assert.equal(opt.code, 0, opt.stderr);
    assert.equal(opt.stdout, 'hello mtls');
    const req = await curl(['--proxy', `https://127.0.0.1:${portOf('required')}`, '--proxy-insecure', url]);
    assert.notEqual(req.code, 0);
    assert.equal(req.stdout, '');
  });

  test('--proxy-cert of another CA: refused', async () => {
    const f = clientFiles('foreign');
    const r = await curl([
      '--proxy',
      `https://localhost:${portOf('optional')}`,
      '--proxy-cacert',
      files.serverCa,
      '--proxy-cert',
      f.cert,
      '--proxy-key',
      f.key,
      url,
    ]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
  });
});

describe('loading', () => {
  const base = {
    enabled: true,
    cert: files.cert,
    key: files.key,
    min_version: 'TLSv1.2' as const,
    client_auth: 'required' as const,
    client_ca: files.clientCa,
    handshake_timeout: 1000,
  };
  test('a missing or empty client_ca is a start-up error naming the key', () => {
    const noCa = file('no-ca.pem', 'nothing here\n');
    for (const client_ca of ['', noCa, join(dir, 'absent.pem')]) {
      assert.throws(
        () => loadEndpointTls({ ...base, client_ca }, 'endpoints.main.tls'),
        (e: unknown) => isOxyError(e) && /^endpoints\.main\.tls\.client_ca: /.test(e.message),
      );
    }
  });

  test('every load reads the files anew (what a restart relies on)', async () => {
    const certFile = file('rotating.pem', server.certPem);
    const keyFile = file('rotating-key.pem', server.keyPem);
    const serve = async (): Promise<string> => {
      const { secureContext } = loadEndpointTls(
        { ...base, client_auth: 'none', cert: certFile, key: keyFile },
        'x',
      );
      const srv = net.createServer((socket) => {
        new tls.TLSSocket(socket, { isServer: true, secureContext }).on('error', () => socket.destroy());
      });
      srv.listen(0, '127.0.0.1');
      try {
        await once(srv, 'listening');
        const { port } = srv.address() as { port: number };
        const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
        await once(s, 'secureConnect');
        const fp = s.getPeerX509Certificate()?.fingerprint256 ?? '';
        s.destroy();
        return fp;
      } finally {
        srv.close();
      }
    };
    assert.equal(await serve(), new X509Certificate(server.certPem).fingerprint256);
    writeFileSync(certFile, alt.certPem);
    writeFileSync(keyFile, alt.keyPem);
    assert.equal(await serve(), new X509Certificate(alt.certPem).fingerprint256);
  });
});
