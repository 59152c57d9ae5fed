/**
 * Headless Chromium (Debian's `chromium`) through an intercepting proxy: the interception CA is
 * trusted in an NSS database this test makes (`certutil`), the page is an HTTPS origin named
 * `origin.test` (mapped to 127.0.0.1 by an egress hook, since a browser behind a proxy lets the
 * proxy resolve), and its script and image must arrive: the script rewrites the DOM (read back
 * with `--dump-dom`) and the origin's access log lists both. Skipped, with the reason, only
 * when chromium or certutil is not installed.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  generateCertificate,
  generateCertificateAuthority,
  hooksApp,
  startApp,
} from '../src/testing/index.ts';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const CERTUTIL = existsSync('/usr/bin/certutil') ? '/usr/bin/certutil' : undefined;
const missing =
  CHROMIUM === undefined
    ? 'chromium is not installed'
    : CERTUTIL === undefined
      ? 'certutil is not installed'
      : null;

// A 1×1 transparent PNG.
const PIXEL = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=',
  'base64',
);
const PAGE = `<!doctype html><html><head><title>t</title></head><body>
<p id="script">script did not run</p><p id="image">image did not load</p>
<img src="/pixel.png" onload="document.getElementById('image').textContent='image loaded'">
<script src="/app.js"></script></body></html>`;

test('chromium loads an intercepted HTTPS page with its script and image', {
  skip: missing ?? false,
  timeout: 90_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oxy-chromium-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const originCa = await generateCertificateAuthority('Origin CA');
  const cert = await generateCertificate({ dnsNames: ['origin.test'], ips: [], issuer: originCa });
  const originCaFile = join(dir, 'origin-ca.pem');
  writeFileSync(originCaFile, originCa.certPem);

  const log: string[] = [];
  const origin = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    log.push(req.url ?? '');
    if (req.url === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end("document.getElementById('script').textContent = 'script ran';");
    } else if (req.url === '/pixel.png') {
      res.writeHead(200, { 'content-type': 'image/png' });
      res.end(PIXEL);
    } else if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  after(() => origin.close());
  const port = (origin.address() as net.AddressInfo).port;

  const oxy = await startApp(
    hooksApp({
      egress: { dnsResolveOverride: (host) => (host === 'origin.test' ? ['127.0.0.1'] : undefined) },
    }),
    {
      settings: {
        interception: { enabled: true, ca: { cert: '', key: '', dir: join(dir, 'ca') } },
        egress: { tls: { extra_ca: [originCaFile] } },
      },
      leakCheck: false,
    },
  );
  after(() => oxy.stop());
  const caFile = join(dir, 'oxy-ca.pem');
  writeFileSync(caFile, oxy.proxy.runtime.interception?.ca.certPem ?? '');

  // Chromium on Linux reads the user's NSS database, ~/.pki/nssdb.
  const home = join(dir, 'home');
  const nssdb = join(home, '.pki', 'nssdb');
  mkdirSync(nssdb, { recursive: true });
  execFileSync(CERTUTIL as string, ['-N', '-d', `sql:${nssdb}`, '--empty-password']);
  execFileSync(CERTUTIL as string, ['-A', '-d', `sql:${nssdb}`, '-t', 'C,,', '-n', 'oxy', '-i', caFile]);

  const dom = await new Promise<string>((resolve, reject) => {
    execFile(
      CHROMIUM as string,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        `--user-data-dir=${join(dir, 'profile')}`,
        `--proxy-server=http://${oxy.address()}`,
        // Chromium sends loopback destinations around the proxy unless told not to.
        '--proxy-bypass-list=<-loopback>',
        '--virtual-time-budget=5000',
        '--dump-dom',
        `https://origin.test:${port}/`,
      ],
      { env: { ...process.env, HOME: home }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err !== null && stdout === '') reject(new Error(`chromium failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
  assert.match(dom, /<p id="script">script ran<\/p>/, dom);
  assert.match(dom, /<p id="image">image loaded<\/p>/, dom);
  for (const path of ['/', '/app.js', '/pixel.png']) assert.ok(log.includes(path), `${path} in ${log}`);
  const inner = oxy.auditRecords().filter((r) => r.request_kind === 'intercepted');
  assert.ok(inner.length >= 3, `intercepted records: ${inner.length}`);
});
