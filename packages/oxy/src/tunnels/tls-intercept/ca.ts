/**
 * The interception CA: the key that signs every certificate Oxy mints for intercepted HTTPS.
 * It is either the operator's (`interception.ca.cert`/`key`) or generated once into
 * `interception.ca.dir` and reused from there by every later start, every worker and
 * `oxy ca export`, so the certificate clients were told to trust stays the same.
 *
 * Life cycle of a generated CA: the first process that needs it generates an ECDSA P-256 key
 * and a self-signed CA certificate (10 years, path length 0), writes both to temporary files
 * (0600) in the directory (created 0700), and publishes them with link(2), which fails if the
 * name exists: the key first, then the certificate, whose presence means "complete". Two
 * processes starting together therefore never overwrite each other; the one that loses reads
 * the winner's files. Rotating the CA means removing the two files (and telling clients).
 *
 * Ordering rule: load the CA before any tunnel is intercepted (at start-up), so a bad file is a
 * start-up error naming `interception.ca.*`.
 */
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { unwritableFile } from 'foundations/settings';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { InterceptionSettings } from './settings.ts';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** The file names of a generated CA in `interception.ca.dir`. */
export const CA_FILES = { cert: 'ca.pem', key: 'ca-key.pem' } as const;

/** A CA able to sign leaf certificates. */
export interface InterceptionCa {
  /** The CA certificate, PEM: what clients trust and `oxy ca export` prints. */
  readonly certPem: string;
  /** The parsed certificate (issuer name and key identifier of minted leaves). */
  readonly cert: x509.X509Certificate;
  /** The signing key and the algorithm it signs with. */
  readonly signingKey: webcrypto.CryptoKey;
  readonly signingAlgorithm: SigningParams;
  /** SHA-256 fingerprint of the certificate (`AB:CD:…`), for logs and pinning. */
  readonly fingerprint256: string;
  /** Where it came from: the operator's files, or `ca.dir` (generated now or earlier). */
  readonly source: 'files' | 'generated' | 'dir';
}

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const CA_YEARS = 10;

function caError(where: string, message: string, cause?: unknown): OxyError {
  return new OxyError(OXY_ERR.INTERCEPTION_CA, `${where}: ${message}`, { cause });
}

/**
 * Why a CA cannot be made in `dir`, or null: one is there already, or the closest existing
 * directory is writable. A path under /proc, /sys or /dev is refused before any mkdir: Node's
 * recursive mkdirSync spins forever there (the parent exists, the child can never be made).
 */
function caDirProblem(dir: string): string | null {
  const key = path.join(dir, CA_FILES.key);
  return fs.existsSync(key) ? null : unwritableFile(key, true);
}

function readText(where: string, file: string): string {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch (e) {
    throw caError(
      where,
      `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      e,
    );
  }
}

/** WebCrypto import and signing parameters of a CA key. */
export type SigningParams =
  | { readonly name: 'ECDSA'; readonly namedCurve: 'P-256' | 'P-384'; readonly hash: 'SHA-256' | 'SHA-384' }
  | { readonly name: 'RSASSA-PKCS1-v1_5'; readonly hash: 'SHA-256' };

/** The WebCrypto signing parameters of a PEM private key (ECDSA P-256/P-384, or RSA). */
function signingParams(key: ReturnType<typeof createPrivateKey>): SigningParams {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    if (curve === 'secp384r1') return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    throw new Error(`unsupported EC curve ${curve}`);
  }
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  throw new Error(`unsupported key type ${key.asymmetricKeyType}`);
}

/** Checks PEM texts of a CA: a CA certificate, unexpired, and its own key of a supported type. */
function parseCaPem(
  certText: string,
  keyText: string,
  where: { cert: string; key: string },
): { node: X509Certificate; key: ReturnType<typeof createPrivateKey>; params: SigningParams } {
  let node: X509Certificate;
  try {
    node = new X509Certificate(certText);
  } catch (e) {
    throw caError(where.cert, 'does not hold a PEM certificate', e);
  }
  if (!node.ca) throw caError(where.cert, 'the certificate is not a CA (basicConstraints cA is not set)');
  if (node.validToDate.getTime() < Date.now()) throw caError(where.cert, `the CA expired on ${node.validTo}`);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyText);
  } catch (e) {
    throw caError(where.key, 'does not hold an unencrypted PEM private key', e);
  }
  if (!node.checkPrivateKey(key)) throw caError(where.key, 'the key does not belong to the CA certificate');
  let params: ReturnType<typeof signingParams>;
  try {
    params = signingParams(key);
  } catch (e) {
    throw caError(where.key, (e as Error).message, e);
  }
  return { node, key, params };
}

/** Builds the CA from PEM texts, checking that it is a CA and that the key is its own. */
async function fromPem(
  certText: string,
  keyText: string,
  where: { cert: string; key: string },
  source: InterceptionCa['source'],
): Promise<InterceptionCa> {
  const { node, key, params } = parseCaPem(certText, keyText, where);
  const signingKey = key.toCryptoKey(params as webcrypto.EcKeyImportParams, false, [
    'sign',
  ]) as unknown as webcrypto.CryptoKey;
  return {
    certPem: node.toString(),
    cert: new x509.X509Certificate(node.raw),
    signingKey,
    signingAlgorithm: params,
    fingerprint256: node.fingerprint256,
    source,
  };
}

/** A new self-signed CA certificate and its key, PEM. */
async function generate(): Promise<{ certPem: string; keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 86_400_000);
  const notAfter = new Date(notBefore.getTime() + CA_YEARS * 365 * 86_400_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    name: `CN=Oxy interception CA (${hostname().replace(/[,=+<>#;\\"]/g, '')} ${notBefore.toISOString().slice(0, 10)}), O=Oxy`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    certPem: `${cert.toString('pem')}\n`,
    keyPem: `${x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')}\n`,
  };
}

/** Publishes `text` as `final` unless it exists: write a 0600 temporary file, then link(2). */
function publish(dir: string, final: string, text: string): boolean {
  const tmp = path.join(dir, `.${path.basename(final)}.${process.pid}.${randomBytes(6).toString('hex')}`);
  fs.writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  try {
    fs.linkSync(tmp, final);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Loads the CA in `dir`, generating it first when it is not there (see the module comment). */
async function fromDir(dir: string, where: string, waitMs: number): Promise<InterceptionCa> {
  const certFile = path.join(dir, CA_FILES.cert);
  const keyFile = path.join(dir, CA_FILES.key);
  const names = { cert: `${where} (${certFile})`, key: `${where} (${keyFile})` };
  const why = caDirProblem(dir);
  if (why !== null) throw caError(where, why);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw caError(where, `cannot create ${dir}: ${(e as NodeJS.ErrnoException).code}`, e);
  }
  let generatedHere = false;
  if (!fs.existsSync(keyFile)) {
    const fresh = await generate();
    try {
      if (publish(dir, keyFile, fresh.keyPem)) {
        generatedHere = publish(dir, certFile, fresh.certPem);
        if (!generatedHere) throw caError(where, `${certFile} exists without the key it was made with`);
      }
    } catch (e) {
      if (e instanceof OxyError) throw e;
      throw caError(where, `cannot write the CA into ${dir}: ${(e as NodeJS.ErrnoException).code}`, e);
    }
  }
  // The certificate is published last: until it exists, another process is still writing.
  for (let waited = 0; !fs.existsSync(certFile); waited += 20) {
    if (waited >= waitMs) {
      throw caError(
        where,
        `${keyFile} exists but ${certFile} never appeared; remove both to generate a new CA`,
      );
    }
    await sleep(20);
  }
  return fromPem(
    readText(names.cert, certFile),
    readText(names.key, keyFile),
    names,
    generatedHere ? 'generated' : 'dir',
  );
}

/**
 * The checks of {@link loadInterceptionCa} that read files and create nothing, for `--check`:
 * the operator's `cert` and `key` (both set, readable, a CA, unexpired, the key its own), or a
 * `dir` to generate into. Throws `OXY_ERR_INTERCEPTION_CA` naming the settings key.
 */
export function checkInterceptionCa(settings: InterceptionSettings['ca'], where = 'interception.ca'): void {
  if (settings.cert !== '' || settings.key !== '') {
    if (settings.cert === '') throw caError(`${where}.cert`, 'required when ca.key is set');
    if (settings.key === '') throw caError(`${where}.key`, 'required when ca.cert is set');
    const names = { cert: `${where}.cert`, key: `${where}.key` };
    parseCaPem(readText(names.cert, settings.cert), readText(names.key, settings.key), names);
    return;
  }
  if (settings.dir === '') throw caError(`${where}.dir`, 'required when ca.cert and ca.key are empty');
  const why = caDirProblem(settings.dir);
  if (why !== null) throw caError(`${where}.dir`, why);
}

/** Options of {@link loadInterceptionCa}. */
export interface LoadCaOptions {
  /** The settings path of the `ca` section, for error messages. Default `interception.ca`. */
  readonly where?: string;
  /** How long to wait for another process finishing a CA in `dir`. Default 5 s. */
  readonly waitMs?: number;
}

/**
 * Loads the interception CA from `settings` (`interception.ca`): the operator's `cert` and
 * `key` when both are set, otherwise the CA in `dir`, generated there on first use. Throws
 * `OXY_ERR_INTERCEPTION_CA` naming the settings key (unreadable file, not a CA, a key that is
 * not the CA's, only one of cert/key set, an unwritable directory).
 */
export async function loadInterceptionCa(
  settings: InterceptionSettings['ca'],
  options: LoadCaOptions = {},
): Promise<InterceptionCa> {
  const where = options.where ?? 'interception.ca';
  if (settings.cert !== '' || settings.key !== '') {
    if (settings.cert === '') throw caError(`${where}.cert`, 'required when ca.key is set');
    if (settings.key === '') throw caError(`${where}.key`, 'required when ca.cert is set');
    const names = { cert: `${where}.cert`, key: `${where}.key` };
    return fromPem(readText(names.cert, settings.cert), readText(names.key, settings.key), names, 'files');
  }
  if (settings.dir === '') throw caError(`${where}.dir`, 'required when ca.cert and ca.key are empty');
  return fromDir(settings.dir, `${where}.dir`, options.waitMs ?? 5000);
}
