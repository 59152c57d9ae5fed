/**
 * Interop: a third-party MASQUE client written with Python's h2 (Debian python3-h2,
 * `fixtures/masque-h2-client.py`, its own capsule code) drives extended CONNECT with capsules
 * against the loopback MASQUE server, resolving names through the test DNS server.
 * Point the same script at Oxy's MASQUE on-ramp once it is wired.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startDnsServer, type TestDnsServer } from '../src/testing/dns-server.ts';
import { startMasqueServer, type TestMasqueServer } from './fixtures/masque-server.ts';

const run = promisify(execFile);
const SCRIPT = path.join(import.meta.dirname, 'fixtures', 'masque-h2-client.py');
// The Debian interpreter, where python3-h2 is installed (a pyenv python3 on PATH may lack it).
const PYTHON = '/usr/bin/python3';

let server: TestMasqueServer;
let dns: TestDnsServer;

before(async () => {
  server = await startMasqueServer();
  dns = await startDnsServer({ records: { 'www.example.test': { A: ['192.0.2.44', '192.0.2.45'] } } });
});

after(async () => {
  await server.close();
  await dns.close();
});

async function client(...args: string[]) {
  const { stdout } = await run(PYTHON, [SCRIPT, '--port', String(server.h2Port), ...args], {
    timeout: 15_000,
  });
  return JSON.parse(stdout) as {
    status: number;
    capsule_protocol: string | null;
    proxy_status: string | null;
    answers: { id: number; rcode: number; addresses: string[] }[];
  };
}

describe('MASQUE interop with python-h2', () => {
  it('agrees with the RFC 9000 varint vectors in its own codec', async () => {
    const { stdout } = await run(PYTHON, [SCRIPT, '--selftest'], { timeout: 15_000 });
    assert.deepEqual(JSON.parse(stdout), { selftest: 'ok' });
  });

  it('resolves a name with DNS over CONNECT-UDP over HTTP/2', async () => {
    const r = await client('--target-host', '127.0.0.1', '--target-port', String(dns.port), '--count', '3');
    assert.equal(r.status, 200);
    assert.equal(r.capsule_protocol, '?1');
    assert.deepEqual(
      r.answers.map((a) => [a.id, a.rcode, a.addresses.sort()]),
      [0x1000, 0x1001, 0x1002].map((id) => [id, 0, ['192.0.2.44', '192.0.2.45']]),
    );
  });

  it('gets the same answer with every capsule split into one-byte DATA frames', async () => {
    const r = await client('--target-host', 'localhost', '--target-port', String(dns.port), '--split');
    assert.equal(r.status, 200);
    assert.deepEqual(r.answers[0]?.addresses.sort(), ['192.0.2.44', '192.0.2.45']);
  });

  it('reads the refusal and Proxy-Status of a blocked target', async () => {
    const r = await client('--target-host', '192.0.2.1', '--target-port', '53');
    assert.equal(r.status, 403);
    assert.match(
      r.proxy_status ?? '',
      /^test; error=destination_ip_prohibited; next-hop="192\.0\.2\.1:53"; details=/,
    );
    assert.deepEqual(r.answers, []);
  });
});
