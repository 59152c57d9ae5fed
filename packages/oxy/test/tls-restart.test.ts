/**
 * Renewed TLS files take effect on a graceful restart: the certificate, key and client CA are
 * replaced on disk under the same names, `--restart` starts a new process on the inherited
 * socket, and that process serves the new certificate and accepts clients of the new CA only
 * (nothing read by the old process is carried over).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { ServiceUnderTest } from '../../foundations/test/fixtures/restart-harness.ts';
import { generateCertificate, generateCertificateAuthority } from '../src/testing/index.ts';
import { proxyPort } from './fixtures/proxied.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');

async function generation(name: string) {
  const server = await generateCertificate({
    commonName: `server ${name}`,
    dnsNames: ['localhost'],
    ips: ['127.0.0.1'],
  });
  const clientCa = await generateCertificateAuthority(`client CA ${name}`);
  const client = await generateCertificate({
    commonName: `client ${name}`,
    dnsNames: [],
    ips: [],
    issuer: clientCa,
    purpose: 'client',
  });
  return { server, clientCa, client };
}
const first = await generation('one');
const second = await generation('two');

let files: { cert: string; key: string; ca: string } = { cert: '', key: '', ca: '' };
const svc = new ServiceUnderTest((sock) => {
  const dir = path.dirname(sock);
  files = {
    cert: path.join(dir, 'cert.pem'),
    key: path.join(dir, 'key.pem'),
    ca: path.join(dir, 'client-ca.pem'),
  };
  return [
    'endpoints:',
    '  main:',
    '    addr: 127.0.0.1:0',
    '    tls:',
    '      enabled: true',
    `      cert: ${files.cert}`,
    `      key: ${files.key}`,
    '      client_auth: required',
    `      client_ca: ${files.ca}`,
    'restart:',
    `  socket: ${sock}`,
    '  drain_timeout: 1s',
    'telemetry:',
    '  server:',
    '    enabled: false',
    '',
  ].join('\n');
}, APP);
after(() => svc.cleanup());

function install(g: Awaited<ReturnType<typeof generation>>): void {
  fs.writeFileSync(files.cert, g.server.certPem);
  fs.writeFileSync(files.key, g.server.keyPem);
  fs.writeFileSync(files.ca, g.clientCa.certPem);
}

/** The server certificate's subject, and whether the proxy kept a client of `g` connected. */
function handshake(port: number, client: Awaited<ReturnType<typeof generation>>['client']) {
  return new Promise<{ subject: string; served: boolean }>((resolve) => {
    const s = tls.connect({
      port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      cert: client.certPem,
      key: client.keyPem,
    });
    let subject = '';
    s.once('secureConnect', () => {
      subject = s.getPeerX509Certificate()?.subject ?? '';
      // A refused client certificate is closed after the handshake (TLS 1.3): ask something.
      s.write('GET http://127.0.0.1:1/ HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n');
    });
    s.once('data', () => {
      s.destroy();
      resolve({ subject, served: true });
    });
    s.once('error', () => resolve({ subject, served: false }));
    s.once('close', () => resolve({ subject, served: false }));
  });
}

test('a restart serves the renewed certificate and trusts only the renewed client CA', async () => {
  install(first);
  await svc.start();
  const port = await proxyPort(svc);
  assert.deepEqual(await handshake(port, first.client), { subject: 'CN=server one', served: true });
  assert.equal((await handshake(port, second.client)).served, false);

  install(second);
  const r = await svc.restart();
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  await svc.waitGeneration(2);
  assert.deepEqual(await handshake(port, second.client), { subject: 'CN=server two', served: true });
  assert.equal((await handshake(port, first.client)).served, false);
});
