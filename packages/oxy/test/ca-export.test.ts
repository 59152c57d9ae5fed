/**
 * `oxy ca export`, run as an operator would (bin/oxy): before any start it generates the CA
 * into `interception.ca.dir` and prints the certificate alone; later runs print the same one;
 * what it prints is what clients trust (curl `--cacert` accepts a leaf minted by that CA);
 * mistakes exit non-zero with one line naming the key.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { curl } from '../src/testing/index.ts';
import { loadInterceptionCa } from '../src/tunnels/tls-intercept/ca.ts';
import { LeafMinter } from '../src/tunnels/tls-intercept/leaf.ts';

const bin = new URL('../bin/oxy', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'oxy-ca-export-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function oxy(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // A bound, not an expectation: a start on a loaded two-core machine took over 10 s.
    execFile(bin, args, { timeout: 60_000, cwd: dir }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

const caDir = join(dir, 'ca');
const config = join(dir, 'oxy.yaml');
writeFileSync(config, `interception:\n  enabled: true\n  ca:\n    dir: ${caDir}\n`);

test('generates the CA before the first start and prints the certificate alone', async () => {
  const first = await oxy('ca', 'export', '-c', config);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stderr, '');
  assert.equal(first.stdout.match(/-----BEGIN /g)?.length, 1, 'one PEM block, no key');
  assert.match(first.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
  assert.ok(new X509Certificate(first.stdout).ca);
  assert.equal(first.stdout, readFileSync(join(caDir, 'ca.pem'), 'latin1'));
  const again = await oxy('ca', 'export', '-c', config);
  assert.equal(again.stdout, first.stdout);
});

test('what it prints is what curl trusts', async () => {
  const exported = join(dir, 'exported.pem');
  writeFileSync(exported, (await oxy('ca', 'export', '-c', config)).stdout);
  const leaf = await new LeafMinter(await loadInterceptionCa({ cert: '', key: '', dir: caDir })).leafFor(
    'site.example',
    '',
  );
  const server = net.createServer((socket) => {
    const t = new tls.TLSSocket(socket, { isServer: true, secureContext: leaf.secureContext });
    t.on('error', () => socket.destroy());
    t.once('secure', () => t.end('HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\ntrusted'));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  after(() => server.close());
  const { port } = server.address() as net.AddressInfo;
  const r = await curl([
    '--cacert',
    exported,
    '--resolve',
    `site.example:${port}:127.0.0.1`,
    `https://site.example:${port}/`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'trusted');
});

test('mistakes exit non-zero with one line', async () => {
  const noSub = await oxy('ca');
  assert.equal(noSub.code, 2);
  assert.match(noSub.stderr, /Usage: oxy ca export/);
  assert.equal((await oxy('ca', 'rotate')).code, 2);
  assert.equal((await oxy('ca', 'export', '--bogus')).code, 2);
  const badFile = join(dir, 'bad.yaml');
  writeFileSync(
    badFile,
    `interception:\n  ca:\n    cert: ${join(dir, 'absent.pem')}\n    key: ${join(dir, 'absent-key.pem')}\n`,
  );
  const bad = await oxy('ca', 'export', '-c', badFile);
  // A setting that cannot be used is a user error, as at start-up: exit 2 (docs/foundations.md).
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^oxy: interception\.ca\.cert: cannot read .*ENOENT\n$/);
  assert.equal(bad.stdout, '');
});
