/**
 * Certificates made on the spot, so TLS tests and examples never ship private keys.
 *
 * `@peculiar/x509` builds the certificates on WebCrypto keys; it resolves its services through
 * tsyringe, which needs the `reflect-metadata` polyfill loaded first, hence the bare import.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate and its key, both PEM. `ca` is set for a certificate signed by a CA made here. */
export interface GeneratedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  /** The issuing CA's certificate (PEM), for the client's trust store; the cert itself when self-signed. */
  readonly caPem: string;
}

/** Options for {@link generateCertificate}. */
export interface CertificateOptions {
  /** Subject common name. Default: the first DNS name, or `localhost`. */
  readonly commonName?: string;
  /** DNS subject alternative names. Default: `['localhost']`. */
  readonly dnsNames?: readonly string[];
  /** IP subject alternative names. Default: `['127.0.0.1', '::1']`. */
  readonly ips?: readonly string[];
  /** Validity in days. Default 7. */
  readonly days?: number;
  /** Sign with this CA instead of self-signing. */
  readonly issuer?: CertificateAuthority;
  /** What the certificate is for (its extended key usage): a TLS `server` (default) or `client` (mTLS). */
  readonly purpose?: 'server' | 'client';
  /** Start of validity, overriding `days` with `notAfter` (e.g. an expired certificate). */
  readonly notBefore?: Date;
  /** End of validity, with `notBefore`. */
  readonly notAfter?: Date;
}

/** A CA able to sign leaf certificates (as TLS interception needs). */
export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPem: string;
  /** @internal the parsed pieces, kept to sign without re-importing. */
  readonly cert: x509.X509Certificate;
  readonly key: webcrypto.CryptoKey;
}

async function exportKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(Date.now() - 60_000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + days * 86_400_000) };
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(12)))
    .toString('hex')
    .replace(/^[89a-f]/, '1');
}

/** Creates a self-signed CA certificate, valid for `days` (default 7). */
export async function generateCertificateAuthority(
  commonName = 'Oxy test CA',
  days = 7,
): Promise<CertificateAuthority> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    ...validity(days),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    certPem: cert.toString('pem'),
    keyPem: await exportKeyPem(keys.privateKey),
    cert,
    key: keys.privateKey,
  };
}

/** Creates a leaf certificate for a TLS server: self-signed, or signed by `options.issuer`. */
export async function generateCertificate(options: CertificateOptions = {}): Promise<GeneratedCertificate> {
  const dnsNames = options.dnsNames ?? ['localhost'];
  const ips = options.ips ?? ['127.0.0.1', '::1'];
  const commonName = options.commonName ?? dnsNames[0] ?? 'localhost';
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
      true,
    ),
    new x509.ExtendedKeyUsageExtension([
      options.purpose === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth,
    ]),
    new x509.SubjectAlternativeNameExtension([
      ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...ips.map((value) => ({ type: 'ip' as const, value })),
    ]),
  ];
  const days = options.days ?? 7;
  const dates =
    options.notBefore !== undefined && options.notAfter !== undefined
      ? { notBefore: options.notBefore, notAfter: options.notAfter }
      : validity(days);
  const issuer = options.issuer;
  const cert = issuer
    ? await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `CN=${commonName}`,
        issuer: issuer.cert.subject,
        ...dates,
        publicKey: keys.publicKey,
        signingKey: issuer.key,
        signingAlgorithm: ALG,
        extensions,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: serial(),
        name: `CN=${commonName}`,
        ...dates,
        keys,
        signingAlgorithm: ALG,
        extensions,
      });
  const certPem = cert.toString('pem');
  return { certPem, keyPem: await exportKeyPem(keys.privateKey), caPem: issuer ? issuer.certPem : certPem };
}
