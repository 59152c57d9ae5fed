/**
 * `setSessionTickets` against Node's own TLS: a server socket made from the context sends the
 * set number of TLS 1.3 session tickets (each one a client 'session' event), and a context
 * the addon cannot reach is reported, not touched.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { setSessionTickets } from './tls.ts';

const dir = mkdtempSync(join(tmpdir(), 'native-tls-'));
after(() => rmSync(dir, { recursive: true, force: true }));
execFileSync(
  'openssl',
  [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=localhost',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
  ],
  { stdio: 'ignore' },
);
const cert = readFileSync(join(dir, 'cert.pem'));
const key = readFileSync(join(dir, 'key.pem'));

/** Session tickets a TLS 1.3 client receives from one handshake with a server made from `ctx`. */
async function ticketsFrom(ctx: tls.SecureContext): Promise<number> {
  const server = net.createServer((raw) => {
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
    s.on('error', () => {});
    // Answer after the tickets would have gone out (they follow the client's Finished).
    s.on('data', () => s.end('bye'));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  let tickets = 0;
  const client = tls.connect({
    port,
    host: '127.0.0.1',
    servername: 'localhost',
    ca: cert,
    minVersion: 'TLSv1.3',
  });
  client.on('session', () => tickets++);
  await once(client, 'secureConnect');
  client.write('hi');
  client.resume();
  await once(client, 'close');
  server.close();
  return tickets;
}

test("OpenSSL's default is two tickets; the setter changes it per context", async () => {
  assert.equal(await ticketsFrom(tls.createSecureContext({ cert, key })), 2);
  for (const n of [0, 1, 3]) {
    const ctx = tls.createSecureContext({ cert, key });
    assert.equal(setSessionTickets(ctx, n), true);
    assert.equal(await ticketsFrom(ctx), n, `${n} tickets`);
  }
});

test('a context without an OpenSSL handle is reported and left alone; a bad count throws', () => {
  assert.equal(setSessionTickets({} as tls.SecureContext, 0), false);
  assert.equal(setSessionTickets({ context: { _external: {} } } as unknown as tls.SecureContext, 0), false);
  assert.throws(() => setSessionTickets(tls.createSecureContext({ cert, key }), -1), RangeError);
  assert.throws(() => setSessionTickets(tls.createSecureContext({ cert, key }), 1.5), RangeError);
});
