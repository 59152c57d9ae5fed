/**
 * Reading an endpoint's certificate and key into a TLS secure context, once, when the endpoint
 * starts: a restart (or a new process) is what picks up renewed files. Every failure is a
 * start-up error whose message names the settings path (`endpoints.main.tls.cert`), so an
 * operator sees which key to fix instead of an OpenSSL stack.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { OXY_ERR, OxyError } from '../../errors.ts';
import type { TlsSettings } from './settings.ts';

/** The ALPN protocol ids an HTTP endpoint offers, in server preference order. */
export function alpnProtocols(http2Enabled: boolean): string[] {
  return http2Enabled ? ['h2', 'http/1.1'] : ['http/1.1'];
}

function fail(path: string, message: string, cause?: unknown): never {
  throw new OxyError(OXY_ERR.INVALID_APP, `${path}: ${message}`, { cause });
}

function readPem(path: string, file: string): Buffer {
  if (file === '') fail(path, 'a file is required when tls.enabled is true');
  try {
    return readFileSync(file);
  } catch (e) {
    return fail(path, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, e);
  }
}

/**
 * Reads and checks `settings.cert` and `settings.key` and builds the secure context the TLS
 * on-ramp serves with. `where` is the settings path of the TLS section (`endpoints.main.tls`).
 * Throws `OXY_ERR_INVALID_APP` naming the offending key: unreadable file, not PEM, a key that
 * does not match the certificate, or an expired certificate.
 */
export function loadSecureContext(settings: TlsSettings, where: string): tls.SecureContext {
  const certPath = `${where}.cert`;
  const keyPath = `${where}.key`;
  const cert = readPem(certPath, settings.cert);
  const key = readPem(keyPath, settings.key);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (e) {
    fail(certPath, `${settings.cert} does not hold a PEM certificate`, e);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    fail(keyPath, `${settings.key} does not hold an unencrypted PEM private key`, e);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    fail(keyPath, `${settings.key} does not match the certificate in ${settings.cert}`);
  }
  if (Date.parse(leaf.validTo) < Date.now()) {
    fail(certPath, `the certificate in ${settings.cert} expired on ${leaf.validTo}`);
  }
  try {
    return tls.createSecureContext({ cert, key, minVersion: settings.min_version });
  } catch (e) {
    return fail(where, `OpenSSL refused the certificate or key: ${(e as Error).message}`, e);
  }
}
