/**
 * A MASQUE request's exchange with its client, whatever the HTTP version: the HTTP/2 extended
 * CONNECT stream or the HTTP/1.1 socket to upgrade, with the two answers a MASQUE request can
 * get (a refusal with `Proxy-Status`, or the success that turns the stream into capsules).
 * Shared by CONNECT-UDP (`onramp.ts`) and CONNECT-IP (`connect-ip.ts`).
 *
 * Ordering rule: exactly one of `refuse` and `accept` is called per exchange, before any capsule.
 */
import http from 'node:http';
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { writeRawResponse } from '../../flows/http/upgrade.ts';
import { type MasqueRefusal, masqueSuccess } from '../../protocols/masque/request.ts';
import type { MasqueProtocol } from '../../protocols/masque/template.ts';

/** A MASQUE request as the runner below sees it, whatever the HTTP version. */
export interface MasqueExchange {
  readonly httpVersion: '2' | '1.1';
  /** The HTTP/2 stream, or the socket to upgrade. */
  readonly stream: Duplex;
  /** Bytes read past the HTTP/1.1 head. */
  readonly early: Buffer | undefined;
  readonly closed: boolean;
  /** Answers the refusal (status, `Proxy-Status`, a short body) and ends the exchange. */
  refuse(r: MasqueRefusal): void;
  /** Sends the success answer for `protocol`; the stream then carries capsules. */
  accept(protocol: MasqueProtocol): void;
}

export class Http2MasqueExchange implements MasqueExchange {
  readonly httpVersion = '2';
  readonly early = undefined;
  readonly stream: http2.ServerHttp2Stream;

  constructor(stream: http2.ServerHttp2Stream) {
    this.stream = stream;
  }

  get closed(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  refuse(r: MasqueRefusal): void {
    if (this.closed || this.stream.headersSent) return;
    // Headers only: `Proxy-Status` carries the details, and a client that cancels the stream
    // on a refusal (as `oxy/masque` does) would otherwise keep an unread body open.
    this.stream.respond({ ':status': r.status, 'proxy-status': r.proxyStatus }, { endStream: true });
  }

  accept(protocol: MasqueProtocol): void {
    const ok = masqueSuccess(protocol, '2');
    this.stream.respond({ ':status': ok.status, ...ok.headers });
  }
}

export class Http1MasqueExchange implements MasqueExchange {
  readonly httpVersion = '1.1';
  readonly stream: Duplex;
  readonly early: Buffer | undefined;

  constructor(socket: Duplex, early: Buffer) {
    this.stream = socket;
    this.early = early.length > 0 ? early : undefined;
  }

  get closed(): boolean {
    return this.stream.destroyed || !this.stream.writable;
  }

  refuse(r: MasqueRefusal): void {
    if (this.closed) return;
    writeRawResponse(this.stream, r.status, `${r.status} ${r.details}\n`, [
      'Proxy-Status',
      r.proxyStatus,
      'Content-Type',
      'text/plain; charset=utf-8',
    ]);
  }

  accept(protocol: MasqueProtocol): void {
    const ok = masqueSuccess(protocol, '1.1');
    let out = `HTTP/1.1 ${ok.status} ${http.STATUS_CODES[ok.status]}\r\n`;
    for (const [name, value] of Object.entries(ok.headers)) out += `${name}: ${value}\r\n`;
    this.stream.write(`${out}\r\n`);
  }
}
