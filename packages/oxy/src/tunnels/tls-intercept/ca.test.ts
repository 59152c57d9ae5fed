/**
 * The interception CA: generated once into `ca.dir` with private modes and reused, two
 * processes racing on a fresh directory end with one CA, the operator's files (EC and RSA,
 * made by openssl) are used as they are, and every bad configuration names its settings key.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isOxyError, OXY_ERR } from '../../errors.ts';
import { generateCertificate } from '../../testing/certs.ts';
import { CA_FILES, loadInterceptionCa } from './ca.ts';

const dir = mkdtempSync(join(tmpdir(), 'oxy-ca-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const none = { cert: '', key: '' };

describe('generated into ca.dir', () => {
  test('first use generates it with private modes; later loads reuse it', async () => {
    const caDir = join(dir, 'fresh', 'ca');
    const first = await loadInterceptionCa({ ...none, dir: caDir });
    assert.equal(first.source, 'generated');
    assert.equal(statSync(caDir).mode & 0o777, 0o700);
    assert.equal(statSync(join(caDir, CA_FILES.cert)).mode & 0o777, 0o600);
    assert.equal(statSync(join(caDir, CA_FILES.key)).mode & 0o777, 0o600);
    const again = await loadInterceptionCa({ ...none, dir: caDir });
    assert.equal(again.source, 'dir');
    assert.equal(again.fingerprint256, first.fingerprint256);
    // A CA that signs: path length 0, key usage keyCertSign, checked by openssl.
    const text = execFileSync('openssl', [
      'x509',
      '-in',
      join(caDir, CA_FILES.cert),
      '-noout',
      '-text',
    ]).toString();
    assert.match(text, /CA:TRUE, pathlen:0/);
    assert.match(text, /Certificate Sign/);
    assert.match(text, /ASN1 OID: prime256v1/);
  });

  test('two processes racing on a fresh directory end with one CA', async () => {
    const script = join(dir, 'race.ts');
    writeFileSync(
      script,
      `import { loadInterceptionCa } from ${JSON.stringify(new URL('./ca.ts', import.meta.url).pathname)};\n` +
        `const ca = await loadInterceptionCa({ cert: '', key: '', dir: process.argv[2] });\n` +
        'process.stdout.write(ca.fingerprint256);\n',
    );
    for (let round = 0; round < 3; round++) {
      const caDir = join(dir, `race-${round}`);
      const runs = await Promise.all(
        [0, 1, 2].map(
          () =>
            new Promise<string>((resolve, reject) =>
              // A bound, not an expectation: three Node.js starts at once on a loaded machine.
              execFile(process.execPath, [script, caDir], { timeout: 60_000 }, (err, stdout, stderr) =>
                err ? reject(new Error(stderr)) : resolve(stdout),
              ),
            ),
        ),
      );
      assert.equal(new Set(runs).size, 1, `round ${round}: ${runs.join(' ')}`);
      assert.equal((await loadInterceptionCa({ ...none, dir: caDir })).fingerprint256, runs[0]);
    }
  });
});

describe("the operator's files", () => {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  for (const kind of ['ec', 'rsa'] as const) {
    test(`a ${kind.toUpperCase()} CA made by openssl is used as it is`, async () => {
      const cert = join(dir, `${kind}-ca.pem`);
      const key = join(dir, `${kind}-ca-key.pem`);
      const keyArgs =
        kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048'];
      openssl(
        'req',
        '-x509',
        ...keyArgs,
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '2',
        '-subj',
        `/CN=${kind} operator CA`,
      );
      const ca = await loadInterceptionCa({ cert, key, dir: '' });
      assert.equal(ca.source, 'files');
      assert.match(ca.cert.subject, new RegExp(`${kind} operator CA`));
    });
  }

  test('bad configurations are errors naming the key', async () => {
    const leaf = await generateCertificate();
    const leafCert = join(dir, 'leaf.pem');
    const leafKey = join(dir, 'leaf-key.pem');
    writeFileSync(leafCert, leaf.certPem);
    writeFileSync(leafKey, leaf.keyPem);
    const ecCert = join(dir, 'ec-ca.pem');
    const cases: [Parameters<typeof loadInterceptionCa>[0], RegExp][] = [
      [{ cert: ecCert, key: '', dir: '' }, /^interception\.ca\.key: required/],
      [{ cert: '', key: leafKey, dir: '' }, /^interception\.ca\.cert: required/],
      [{ cert: leafCert, key: leafKey, dir: '' }, /^interception\.ca\.cert: the certificate is not a CA/],
      [{ cert: ecCert, key: leafKey, dir: '' }, /^interception\.ca\.key: the key does not belong/],
      [
        { cert: join(dir, 'absent.pem'), key: leafKey, dir: '' },
        /^interception\.ca\.cert: cannot read .*ENOENT/,
      ],
      [{ cert: '', key: '', dir: '' }, /^interception\.ca\.dir: required/],
    ];
    for (const [settings, message] of cases) {
      await assert.rejects(loadInterceptionCa(settings), (e: unknown) => {
        assert.ok(isOxyError(e) && e.code === OXY_ERR.INTERCEPTION_CA, String(e));
        assert.match(e.message, message);
        return true;
      });
    }
  });
});
