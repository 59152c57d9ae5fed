/**
 * The I/O half of interception, around the sans-IO pieces: read a tunnel's ClientHello off the
 * client stream without losing a byte, then run the server side of TLS on that stream with a
 * minted leaf, the ClientHello replayed first.
 *
 * Why a replaying stream: `tls.TLSSocket` over a `net.Socket` reads from the socket's handle,
 * not from its JS buffer, so bytes given back with `unshift` would never reach OpenSSL. A
 * small Duplex that yields the read bytes first and then the client's makes the handshake see
 * exactly what the client sent.
 *
 * Ordering rule: `readClientHello` pauses the client and removes its listeners before it
 * resolves; nothing else may read the client until `terminateTls` takes it over.
 */
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { OXY_ERR, OxyError } from '../../errors.ts';
import {
  type ClientHello,
  ClientHelloError,
  ClientHelloParser,
  DEFAULT_MAX_CLIENT_HELLO,
} from './client-hello.ts';
import type { LeafCertificate } from './leaf.ts';

/** A ClientHello and every byte read to get it (to replay). */
export interface PeekedClientHello {
  readonly hello: ClientHello;
  readonly bytes: Buffer;
}

/**
 * Reads from `client` until a whole ClientHello arrived. Rejects with
 * `OXY_ERR_TLS_CLIENT_HELLO` (the reason in the message, the `ClientHelloError` as cause) for
 * garbage, a truncated hello (the client ended) or a bad SNI, and on `timeoutMs`.
 */
export function readClientHello(
  client: Duplex,
  options: { readonly maxBytes?: number; readonly timeoutMs?: number } = {},
): Promise<PeekedClientHello> {
  const parser = new ClientHelloParser(options.maxBytes ?? DEFAULT_MAX_CLIENT_HELLO);
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.off('error', onError);
      client.off('close', onEnd);
      client.pause();
    };
    const fail = (e: unknown): void => {
      done();
      const reason = e instanceof ClientHelloError ? e.reason : 'truncated';
      reject(
        new OxyError(OXY_ERR.TLS_CLIENT_HELLO, `bad TLS ClientHello: ${reason}`, {
          source: 'downstream',
          cause: e,
        }),
      );
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      try {
        const progress = parser.push(chunk);
        if (progress.kind === 'done') {
          done();
          resolve({ hello: progress.hello, bytes: Buffer.concat(chunks) });
        }
      } catch (e) {
        fail(e);
      }
    };
    const onEnd = (): void => {
      try {
        parser.end();
      } catch (e) {
        fail(e);
      }
    };
    const onError = (e: Error): void => fail(e);
    const timer = setTimeout(
      () => fail(new ClientHelloError('truncated', 'no ClientHello in time')),
      options.timeoutMs ?? 10_000,
    );
    client.on('data', onData);
    client.once('end', onEnd);
    client.once('close', onEnd);
    client.on('error', onError);
    client.resume();
  });
}

/** A Duplex that reads `prefix` first and then `stream`, and writes to `stream`. */
export function withPrefix(prefix: Buffer, stream: Duplex): Duplex {
  let first = prefix.length > 0;
  const out = new Duplex({
    read() {
      if (first) {
        first = false;
        this.push(prefix);
      }
      stream.resume();
    },
    write(chunk, _encoding, cb) {
      stream.write(chunk, cb);
    },
    final(cb) {
      stream.end();
      cb();
    },
    destroy(err, cb) {
      stream.destroy(err ?? undefined);
      cb(err);
    },
  });
  stream.on('data', (chunk: Buffer) => {
    if (!out.push(chunk)) stream.pause();
  });
  stream.once('end', () => out.push(null));
  stream.once('error', (e) => out.destroy(e));
  stream.once('close', () => out.destroy());
  return out;
}

/**
 * Runs the server side of TLS on `client` with `leaf`, after replaying `replay` (the bytes
 * `readClientHello` read). `alpn` is what the client may choose from (an empty list offers no
 * ALPN). Resolves with the TLS socket once the handshake finished; rejects with
 * `OXY_ERR_TLS_CLIENT_HELLO` when the client aborts it (e.g. it does not trust the CA).
 */
export function terminateTls(
  client: Duplex,
  replay: Buffer,
  leaf: LeafCertificate,
  alpn: readonly string[],
  timeoutMs = 10_000,
): Promise<tls.TLSSocket> {
  // A plain TCP socket keeps its native handle: the replayed bytes go back into its readable
  // buffer, which TLSSocket hands to OpenSSL first (`ssl.receive` of what is buffered), and
  // every later byte is read natively. Anything else (an HTTP/2 stream, a socket with its
  // handle gone) goes through the replaying JS stream.
  const native = client instanceof net.Socket && (client as { _handle?: unknown })._handle != null;
  if (native) client.unshift(replay);
  const socket = new tls.TLSSocket(native ? client : withPrefix(replay, client), {
    isServer: true,
    secureContext: leaf.secureContext,
    ...(alpn.length === 0 ? {} : { ALPNProtocols: [...alpn] }),
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => onError(new Error('TLS handshake timed out')), timeoutMs);
    const onError = (e: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(
        new OxyError(
          OXY_ERR.TLS_CLIENT_HELLO,
          `intercepted TLS handshake failed: ${(e as NodeJS.ErrnoException).code ?? e.message}`,
          {
            source: 'downstream',
            cause: e,
          },
        ),
      );
    };
    socket.once('error', onError);
    socket.once('secure', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
