/**
 * Minted leaves: served by a real TLS server and verified by node:tls and curl trusting only
 * the interception CA, for a name (DNS SAN) and for IP literals without SNI (IP SAN); ECDSA
 * P-256 with a short validity inside the CA's; cached (one signing per name, also when asked
 * concurrently) in a bounded LRU.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { curl } from '../../testing/clients.ts';
import { loadInterceptionCa } from './ca.ts';
import { canonicalIp, type LeafCertificate, LeafMinter } from './leaf.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-leaf-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const ca = await loadInterceptionCa({ cert: '', key: '', dir: join(dir, 'ca') });
const caFile = join(dir, 'ca', 'ca.pem');

/** Serves `leaf` on an ephemeral port; the client's hello picks nothing else. */
async function serve(leaf: LeafCertificate, host = '127.0.0.1'): Promise<number> {
  const server = net.createServer((socket) => {
    const t = new tls.TLSSocket(socket, { isServer: true, secureContext: leaf.secureContext });
    t.on('error', () => socket.destroy());
    t.once('secure', () => t.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'));
  });
  server.listen(0, host);
  await once(server, 'listening');
  after(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

function verify(port: number, options: tls.ConnectionOptions): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, ca: ca.certPem, ...options });
    s.once('secureConnect', () => {
      const cert = s.getPeerX509Certificate();
      s.destroy();
      cert === undefined ? reject(new Error('no certificate')) : resolve(cert);
    });
    s.once('error', reject);
  });
}

describe('minted leaves verify against the CA alone', () => {
  const minter = new LeafMinter(ca);
  test('a name: DNS SAN, node:tls and curl --cacert accept it', async () => {
    const leaf = await minter.leafFor('Intercepted.Example', '203.0.113.9');
    assert.equal(leaf.name, 'intercepted.example');
    const port = await serve(leaf);
    const cert = await verify(port, { host: '127.0.0.1', servername: 'intercepted.example' });
    assert.equal(cert.subjectAltName, 'DNS:intercepted.example');
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey));
    const days = (cert.validToDate.getTime() - cert.validFromDate.getTime()) / 86_400_000;
    assert.ok(days > 7 && days <= 31, `validity ${days} days`);
    const r = await curl([
      '--cacert',
      caFile,
      '--resolve',
      `intercepted.example:${port}:127.0.0.1`,
      `https://intercepted.example:${port}/`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok');
  });

  test('the leaf is served with the CA after it (no chain built per handshake)', async () => {
    const leaf = await new LeafMinter(ca).leafFor('chain.test', 'chain.test');
    const port = await serve(leaf);
    // openssl s_client prints every certificate the server sent.
    const out = await new Promise<string>((resolve) => {
      execFile(
        'openssl',
        [
          's_client',
          '-connect',
          `127.0.0.1:${port}`,
          '-servername',
          'chain.test',
          '-showcerts',
          '-CAfile',
          caFile,
        ],
        { timeout: 10_000 },
        (_err, stdout) => resolve(stdout),
      );
    }).catch(() => '');
    const sent = out.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    assert.equal(sent.length, 2, out);
    assert.equal(
      new X509Certificate(sent[1] as string).fingerprint256,
      new X509Certificate(ca.certPem).fingerprint256,
    );
    assert.match(out, /Verify return code: 0 \(ok\)/);
  });

  test('an IP literal target without SNI: IP SAN (v4 and v6)', async () => {
    const v4 = await minter.leafFor(null, '127.0.0.1');
    assert.equal(
      (await verify(await serve(v4), { host: '127.0.0.1' })).subjectAltName,
      'IP Address:127.0.0.1',
    );
    const v6 = await minter.leafFor(null, '[0:0::1]');
    assert.equal(v6.name, '::1');
    const cert = await verify(await serve(v6, '::1'), { host: '::1' });
    assert.equal(cert.subjectAltName, 'IP Address:0:0:0:0:0:0:0:1');
  });

  test('a name the leaf was not minted for is refused', async () => {
    const port = await serve(await minter.leafFor('one.example', 'one.example'));
    await assert.rejects(
      verify(port, { host: '127.0.0.1', servername: 'two.example' }),
      /ERR_TLS_CERT_ALTNAME_INVALID|altnames/,
    );
  });

  test('a trailing dot and case map to one cached leaf', async () => {
    const a = await minter.leafFor('Cached.Example.', 'x');
    const b = await minter.leafFor('cached.example', 'y');
    assert.equal(a, b);
  });
});

describe('the cache', () => {
  test('one signing per name, also for concurrent requests', async () => {
    const minter = new LeafMinter(ca);
    const leaves = await Promise.all([1, 2, 3, 4].map(() => minter.leafFor('same.example', 'same.example')));
    assert.equal(new Set(leaves).size, 1);
    assert.equal(minter.minted, 1);
  });

  test('bounded: the least recently used leaf is minted again', async () => {
    const minter = new LeafMinter(ca, { max: 2 });
    await minter.leafFor('a.example', '');
    await minter.leafFor('b.example', '');
    await minter.leafFor('a.example', '');
    await minter.leafFor('c.example', ''); // evicts b
    assert.equal(minter.size, 2);
    assert.equal(minter.minted, 3);
    await minter.leafFor('a.example', '');
    assert.equal(minter.minted, 3);
    await minter.leafFor('b.example', '');
    assert.equal(minter.minted, 4);
  });

  test('a leaf never outlives its CA', async () => {
    const minter = new LeafMinter(ca, { days: 365 * 20 });
    const leaf = await minter.leafFor('long.example', '');
    assert.ok(leaf.notAfter.getTime() <= ca.cert.notAfter.getTime());
  });
});

test('canonicalIp', () => {
  assert.equal(canonicalIp('[::FFFF:1.2.3.4]'), '::ffff:1.2.3.4');
  assert.equal(canonicalIp('10.1.2.3'), '10.1.2.3');
  assert.equal(canonicalIp('example.com'), null);
});
