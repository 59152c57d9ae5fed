/**
 * The upstream TLS connector against a local origin with a certificate no system store
 * trusts: refused without `extra_ca`, accepted with it; ALPN; SNI only for names; sessions
 * resumed only under the same trust; over a socket egress connected, or on its own.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { httpStatusFor, isOxyError, OXY_ERR } from '../../errors.ts';
import { generateCertificate, generateCertificateAuthority } from '../../testing/certs.ts';
import { connectTls, loadUpstreamTrust, sniFor, TlsSessionCache, trustOf } from './connect.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-upstream-tls-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ca = await generateCertificateAuthority('Origin CA');
const unrelated = await generateCertificateAuthority('Unrelated CA');
const leaf = await generateCertificate({ dnsNames: ['origin.test'], ips: ['127.0.0.1'], issuer: ca });
const caFile = join(dir, 'ca.pem');
const bothFile = join(dir, 'both.pem');
writeFileSync(caFile, ca.certPem);
writeFileSync(bothFile, unrelated.certPem + ca.certPem);

/** A TLS origin that records the SNI of each handshake. */
async function startOrigin(alpn: string[] | undefined) {
  const snis: (string | false)[] = [];
  const server = tls.createServer(
    { cert: leaf.certPem, key: leaf.keyPem, ...(alpn === undefined ? {} : { ALPNProtocols: alpn }) },
    (s) => {
      snis.push((s as tls.TLSSocket & { servername: string | false }).servername);
      s.end('hi');
    },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  after(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, snis };
}

const origin = await startOrigin(['h2', 'http/1.1']);
const http1Only = await startOrigin(['http/1.1']);
const noAlpn = await startOrigin(undefined);

/** Connects over a TCP socket made here, as egress would hand it over. */
async function tcp(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  return s;
}

describe('verification', () => {
  test('an origin whose CA is not configured is refused with a 502 naming the reason', async () => {
    const err = await connectTls({
      host: 'origin.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust: loadUpstreamTrust({ extra_ca: [] }),
      sessions: new TlsSessionCache(),
    }).then(
      () => assert.fail('connected without trusting the origin'),
      (e: unknown) => e,
    );
    assert.ok(isOxyError(err));
    assert.equal(err.code, OXY_ERR.UPSTREAM_TLS);
    assert.equal(httpStatusFor(err), 502);
    assert.match(
      err.message,
      /certificate verification failed: UNABLE_TO_(VERIFY_LEAF_SIGNATURE|GET_ISSUER_CERT_LOCALLY)/,
    );
    // The reason names Oxy's setting, not Node's command-line flag.
    assert.match(err.message, /egress\.tls\.extra_ca/);
    assert.doesNotMatch(err.message, /--use-system-ca/);
  });

  test('with the CA in extra_ca it is accepted, SNI carries the name', async () => {
    const before = origin.snis.length;
    const c = await connectTls({
      host: 'origin.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust: loadUpstreamTrust({ extra_ca: [caFile] }),
      sessions: new TlsSessionCache(),
    });
    assert.equal(c.alpn, 'h2');
    await once(c.socket, 'data'); // the origin's greeting: it saw the handshake
    c.socket.destroy();
    await waitFor(() => origin.snis.length > before);
    assert.equal(origin.snis.at(-1), 'origin.test');
  });

  test('a self-signed origin: refused, then accepted once its certificate is in extra_ca', async () => {
    const self = await generateCertificate({ dnsNames: ['localhost'], ips: [] });
    const server = tls.createServer({ cert: self.certPem, key: self.keyPem }, (s) => s.end('hi'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    after(() => server.close());
    const { port } = server.address() as net.AddressInfo;
    const selfFile = join(dir, 'self.pem');
    writeFileSync(selfFile, self.certPem);
    const refused = await connectTls({
      host: 'localhost',
      port,
      socket: await tcp(port),
      trust: loadUpstreamTrust({ extra_ca: [] }),
    }).catch((e: unknown) => e);
    assert.ok(isOxyError(refused) && refused.code === OXY_ERR.UPSTREAM_TLS, String(refused));
    assert.match(refused.message, /DEPTH_ZERO_SELF_SIGNED_CERT/);
    const c = await connectTls({
      host: 'localhost',
      port,
      socket: await tcp(port),
      trust: loadUpstreamTrust({ extra_ca: [selfFile] }),
    });
    assert.equal((await once(c.socket, 'data'))[0].toString(), 'hi');
    c.socket.destroy();
  });

  test('a name the certificate does not cover is refused', async () => {
    const err = await connectTls({
      host: 'other.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust: loadUpstreamTrust({ extra_ca: [caFile] }),
      sessions: new TlsSessionCache(),
    }).catch((e: unknown) => e);
    assert.ok(isOxyError(err) && err.code === OXY_ERR.UPSTREAM_TLS, String(err));
    assert.match(err.message, /ERR_TLS_CERT_ALTNAME_INVALID/);
  });

  test('an IP literal: no SNI, the IP SAN is checked; connecting on its own', async () => {
    const before = origin.snis.length;
    const c = await connectTls({
      host: '127.0.0.1',
      port: origin.port,
      trust: loadUpstreamTrust({ extra_ca: [caFile] }),
      sessions: new TlsSessionCache(),
    });
    await once(c.socket, 'data');
    c.socket.destroy();
    await waitFor(() => origin.snis.length > before);
    assert.equal(origin.snis.at(-1), false);
    assert.equal(sniFor('::1'), undefined);
    assert.equal(sniFor('Example.com.'), 'Example.com');
  });

  test('bad extra_ca files are start-up errors naming the list index', () => {
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'no certificate here');
    for (const files of [
      [caFile, garbage],
      [caFile, join(dir, 'absent.pem')],
    ]) {
      assert.throws(
        () => loadUpstreamTrust({ extra_ca: files }),
        (e: unknown) => isOxyError(e) && /^egress\.tls\.extra_ca\[1\]: /.test(e.message),
      );
    }
  });

  test('connection refused is not a TLS error', async () => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const { port } = closed.address() as net.AddressInfo;
    closed.close();
    const err = await connectTls({ host: '127.0.0.1', port, trust: trustOf([]) }).catch((e: unknown) => e);
    assert.ok(isOxyError(err) && err.code === OXY_ERR.CONNECT_REFUSED, String(err));
  });
});

describe('ALPN', () => {
  const trust = trustOf([ca.certPem]);
  for (const [name, port, expected] of [
    ['h2 origin', origin.port, 'h2'],
    ['http/1.1-only origin', http1Only.port, 'http/1.1'],
    ['origin without ALPN', noAlpn.port, 'http/1.1'],
  ] as const) {
    test(`${name}: ${expected}`, async () => {
      const c = await connectTls({
        host: 'origin.test',
        port,
        socket: await tcp(port),
        trust,
        sessions: new TlsSessionCache(),
      });
      assert.equal(c.alpn, expected);
      c.socket.destroy();
    });
  }

  test('offering only http/1.1 to an h2 origin gets http/1.1', async () => {
    const c = await connectTls({
      host: 'origin.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust,
      alpn: ['http/1.1'],
      sessions: new TlsSessionCache(),
    });
    assert.equal(c.alpn, 'http/1.1');
    c.socket.destroy();
  });
});

describe('session resumption', () => {
  /** Connects, waits for the session ticket, and reports whether the session was resumed. */
  async function handshake(trust: ReturnType<typeof trustOf>, sessions: TlsSessionCache): Promise<boolean> {
    const c = await connectTls({
      host: 'origin.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust,
      sessions,
    });
    if (!c.resumed) await once(c.socket, 'session');
    c.socket.destroy();
    return c.resumed;
  }

  test('a session is resumed under the same trust, never under another', async () => {
    const sessions = new TlsSessionCache();
    const a = loadUpstreamTrust({ extra_ca: [caFile] });
    const b = loadUpstreamTrust({ extra_ca: [bothFile] });
    assert.notEqual(a.hash, b.hash);
    assert.equal(await handshake(a, sessions), false);
    assert.equal(await handshake(a, sessions), true);
    // Another trust configuration, which would verify too: still a full handshake.
    assert.equal(await handshake(b, sessions), false);
    assert.equal(await handshake(b, sessions), true);
    assert.equal(sessions.size, 2);
  });

  test('the same CAs loaded again (other order) are the same trust', () => {
    const both = loadUpstreamTrust({ extra_ca: [bothFile] });
    writeFileSync(join(dir, 'both-reversed.pem'), ca.certPem + unrelated.certPem);
    const reversed = loadUpstreamTrust({ extra_ca: [join(dir, 'both-reversed.pem')] });
    assert.equal(both.hash, reversed.hash);
  });

  test('a trust without the CA cannot ride on a session of one with it', async () => {
    const sessions = new TlsSessionCache();
    assert.equal(await handshake(trustOf([ca.certPem]), sessions), false);
    const err = await connectTls({
      host: 'origin.test',
      port: origin.port,
      socket: await tcp(origin.port),
      trust: trustOf([]),
      sessions,
    }).catch((e: unknown) => e);
    assert.ok(isOxyError(err) && err.code === OXY_ERR.UPSTREAM_TLS, String(err));
  });
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), 'condition not reached');
}
