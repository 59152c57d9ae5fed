/**
 * Leaf certificates for intercepted tunnels: one per server name (or IP literal), signed by
 * the interception CA, minted when a tunnel first needs it and kept in a bounded LRU so a busy
 * host costs one signature, not one per tunnel.
 *
 * Choices, for speed and for what clients accept:
 * - One ECDSA P-256 key pair per minter (per process) for every leaf: key generation is the
 *   expensive part, and the key never leaves the process (mitmproxy does the same).
 * - Validity from one day back (clock skew) to 30 days on, never past the CA's own end
 *   (browsers cap server certificates at 398 days; short is better for a key in memory); a
 *   cached leaf is minted anew a day before it would expire.
 * - The name goes in the subject alternative names (DNS, or IP for a literal), which is what
 *   clients check; serverAuth extended key usage; the CA's key identifier as authority.
 * - The leaf is served with the CA certificate after it: without a chain, OpenSSL tries to
 *   build one from the root store on every handshake (and fails: the CA is not in it), which
 *   cost more than the handshake's own cryptography (1.8 → 1.3 ms of CPU per new intercepted
 *   tunnel in S8b). Clients that trust the CA ignore the extra certificate.
 *
 * Ordering rule: concurrent requests for the same name share one signing (the cache holds the
 * promise), and a failed signing is not cached.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import * as x509 from '@peculiar/x509';
import { log } from 'foundations/telemetry';
import { LRUCache } from 'lru-cache';
import { native } from '../../flows/stream/native-addon.ts';
import type { InterceptionCa } from './ca.ts';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** A minted leaf certificate, ready to serve. */
export interface LeafCertificate {
  /** What it was minted for: a lower-case DNS name or a canonical IP literal. */
  readonly name: string;
  readonly certPem: string;
  readonly keyPem: string;
  /** A server context serving this leaf (build once, serve many handshakes). */
  readonly secureContext: tls.SecureContext;
  readonly notAfter: Date;
}

/** Options of {@link LeafMinter}. */
export interface LeafMinterOptions {
  /** Leaves kept (LRU). Default 1024. */
  readonly max?: number;
  /** Days a leaf is valid. Default 30. */
  readonly days?: number;
  /**
   * TLS 1.3 session tickets each leaf's context sends after a full handshake
   * (`interception.session_tickets`). Default: OpenSSL's (2).
   */
  readonly sessionTickets?: number;
}

const LEAF_ALG = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const DAY = 86_400_000;

/** The canonical form of an IP literal (brackets dropped), or null for a name. */
export function canonicalIp(host: string): string | null {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const family = net.isIP(bare);
  if (family === 0) return null;
  return family === 4 ? bare : new net.SocketAddress({ address: bare, family: 'ipv6' }).address;
}

let ticketsUnset = false;

/**
 * Sets a leaf context's session tickets through the addon (Node has no option for it); where
 * it cannot, the leaf keeps OpenSSL's two, said once at WARN.
 */
function setTickets(ctx: tls.SecureContext, count: number): void {
  if (native?.tlsContext.setSessionTickets(ctx, count) === true || ticketsUnset) return;
  ticketsUnset = true;
  log.warn(
    'interception.session_tickets not applied: this Node does not expose its TLS contexts to the addon',
    {
      session_tickets: count,
    },
  );
}

/** Mints and caches leaf certificates signed by one interception CA. */
export class LeafMinter {
  readonly #ca: InterceptionCa;
  readonly #days: number;
  readonly #tickets: number | undefined;
  readonly #cache: LRUCache<string, Promise<LeafCertificate>>;
  #keys: Promise<{ pair: webcrypto.CryptoKeyPair; pem: string; aki: x509.Extension }> | null = null;
  /** Leaves signed so far (not served from the cache). */
  minted = 0;

  constructor(ca: InterceptionCa, options: LeafMinterOptions = {}) {
    this.#ca = ca;
    this.#days = options.days ?? 30;
    this.#tickets = options.sessionTickets;
    this.#cache = new LRUCache({ max: options.max ?? 1024 });
  }

  /** Leaves cached now. */
  get size(): number {
    return this.#cache.size;
  }

  /**
   * The leaf for a tunnel: for `serverName` (the ClientHello's SNI) when there is one,
   * otherwise for `target` (the CONNECT host: an IP literal gets an IP SAN). Cached by name.
   */
  leafFor(serverName: string | null, target: string): Promise<LeafCertificate> {
    const raw = serverName ?? target;
    const name = canonicalIp(raw) ?? raw.toLowerCase().replace(/\.$/, '');
    const cached = this.#cache.get(name);
    if (cached !== undefined) return cached;
    const minting = this.#mint(name).then((leaf) => {
      // Mint anew a day before expiry: the LRU forgets it then.
      this.#cache.set(name, minting, { ttl: Math.max(1, leaf.notAfter.getTime() - Date.now() - DAY) });
      return leaf;
    });
    minting.catch(() => this.#cache.delete(name));
    this.#cache.set(name, minting);
    return minting;
  }

  #leafKeys() {
    this.#keys ??= (async () => {
      const pair = (await webcrypto.subtle.generateKey(LEAF_ALG, true, [
        'sign',
        'verify',
      ])) as webcrypto.CryptoKeyPair;
      const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', pair.privateKey);
      const ski = this.#ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
      const aki =
        ski === null
          ? await x509.AuthorityKeyIdentifierExtension.create(this.#ca.cert)
          : new x509.AuthorityKeyIdentifierExtension(ski.keyId);
      return { pair, pem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), aki };
    })();
    return this.#keys;
  }

  async #mint(name: string): Promise<LeafCertificate> {
    const keys = await this.#leafKeys();
    const ip = net.isIP(name) !== 0;
    const now = Date.now();
    const caEnd = this.#ca.cert.notAfter.getTime();
    const notBefore = new Date(now - DAY);
    const notAfter = new Date(Math.min(now + this.#days * DAY, caEnd));
    const cn = name.length <= 64 ? name : name.slice(0, 64);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: `01${randomBytes(15).toString('hex')}`,
      subject: [{ CN: [cn] }],
      issuer: this.#ca.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: keys.pair.publicKey,
      signingKey: this.#ca.signingKey,
      signingAlgorithm: this.#ca.signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: ip ? 'ip' : 'dns', value: name }]),
        keys.aki,
      ],
    });
    this.minted++;
    const certPem = cert.toString('pem');
    const secureContext = tls.createSecureContext({ cert: `${certPem}\n${this.#ca.certPem}`, key: keys.pem });
    if (this.#tickets !== undefined) setTickets(secureContext, this.#tickets);
    return Object.freeze({
      name,
      certPem,
      keyPem: keys.pem,
      secureContext,
      notAfter,
    });
  }
}
