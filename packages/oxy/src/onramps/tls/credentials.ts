/**
 * Reading an endpoint's certificate, key and client CA into TLS secure contexts, once, when the
 * endpoint starts: a graceful restart starts a new process, which reads every file anew (nothing
 * here is cached beyond the endpoint's life). Every failure is a start-up error whose message
 * names the settings path (`endpoints.main.tls.cert`), so an operator sees which key to fix
 * instead of an OpenSSL stack.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
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
  return loadEndpointTls(settings, where).secureContext;
}

/** A certificate chain and its private key, PEM, as `TlsHook.selectCertificate` returns them. */
export interface CertificateAndKey {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/** What the TLS on-ramp of one endpoint serves with. */
export interface EndpointTls {
  /** The context of `tls.cert`/`tls.key` (with the client CA when client_auth is on). */
  readonly secureContext: tls.SecureContext;
  readonly clientAuth: TlsSettings['client_auth'];
  /**
   * A context for another certificate with the endpoint's client CA and minimum version (what
   * `TlsHook.selectCertificate` chose). Built once per certificate object (kept while the app
   * holds the object), so an app returning the same object for a name costs no rebuild.
   */
  contextFor(certificate: CertificateAndKey): tls.SecureContext;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** Reads `client_ca`: one or more PEM CA certificates, each checked, returned as one PEM text. */
function readClientCa(settings: TlsSettings, where: string): string {
  const path = `${where}.client_ca`;
  if (settings.client_ca === '')
    fail(path, `a file is required when client_auth is "${settings.client_auth}"`);
  const text = readPem(path, settings.client_ca).toString('latin1');
  const blocks = text.match(PEM_CERT) ?? [];
  if (blocks.length === 0) fail(path, `${settings.client_ca} holds no PEM certificate`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (e) {
      fail(path, `${settings.client_ca} holds a PEM block that is not a certificate`, e);
    }
  }
  return blocks.join('\n');
}

/**
 * Reads and checks the TLS files of an endpoint (see {@link loadSecureContext}) and, when
 * `client_auth` is not `none`, `client_ca`. Throws `OXY_ERR_INVALID_APP` naming the key.
 */
export function loadEndpointTls(settings: TlsSettings, where: string): EndpointTls {
  const clientCa = settings.client_auth === 'none' ? undefined : readClientCa(settings, where);
  const build = (cert: string | Buffer, key: string | Buffer): tls.SecureContext =>
    tls.createSecureContext({
      cert,
      key,
      minVersion: settings.min_version,
      ...(clientCa === undefined
        ? {}
        : {
            ca: clientCa,
            // OpenSSL refuses to resume a session with client verification on unless the
            // context names one; per endpoint, so a ticket of one endpoint is no good on another.
            sessionIdContext: createHash('sha256').update(where).update(clientCa).digest('hex').slice(0, 32),
          }),
    });
  const secureContext = loadCheckedContext(settings, where, build);
  const built = new WeakMap<CertificateAndKey, tls.SecureContext>();
  return {
    secureContext,
    clientAuth: settings.client_auth,
    contextFor(certificate) {
      let ctx = built.get(certificate);
      if (ctx === undefined) {
        ctx = build(certificate.cert, certificate.key);
        built.set(certificate, ctx);
      }
      return ctx;
    },
  };
}

function loadCheckedContext(
  settings: TlsSettings,
  where: string,
  build: (cert: Buffer, key: Buffer) => tls.SecureContext,
): tls.SecureContext {
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
    return build(cert, key);
  } catch (e) {
    return fail(where, `OpenSSL refused the certificate or key: ${(e as Error).message}`, e);
  }
}
