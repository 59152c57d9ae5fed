import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseSettings } from 'foundations/settings';
import { captureTelemetry } from 'foundations/telemetry/testing';
import { encodeV2, ProxyProtocolError, type ProxyReason } from '../../protocols/proxy-protocol/index.ts';
import {
  encodeDatagramReply,
  type ProxyHeaderRead,
  ProxyProtocolDatagramSettings,
  ProxyProtocolSettings,
  parseDatagramHeader,
  proxyReadOptions,
  type ReadProxyHeaderOptions,
  readProxyHeader,
  TrustedPeers,
} from './index.ts';

function rejects(reason: ProxyReason) {
  return (e: unknown) => e instanceof ProxyProtocolError && e.reason === reason;
}

/** Resolves when the socket has closed (at once if it already has). */
async function closed(socket: net.Socket): Promise<void> {
  if (!socket.closed) await once(socket, 'close');
}

/** A server whose every connection goes through `readProxyHeader` with the options of the moment. */
class Reader {
  readonly server = net.createServer({ pauseOnConnect: true });
  options: ReadProxyHeaderOptions = proxyReadOptions(parseSettings(ProxyProtocolSettings, []));
  readonly results: Promise<{ read?: ProxyHeaderRead; error?: unknown; socket: net.Socket }>[] = [];
  port = 0;

  async start() {
    this.server.on('connection', (socket) => {
      socket.on('error', () => {});
      this.results.push(
        readProxyHeader(socket, this.options).then(
          (read) => ({ read, socket }),
          (error: unknown) => ({ error, socket }),
        ),
      );
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Connects, writes `pieces` with a pause between them, and returns the server's outcome. */
  async run(pieces: (string | Uint8Array)[], gapMs = 15) {
    const n = this.results.length;
    const client = net.connect(this.port, '127.0.0.1');
    client.on('error', () => {});
    client.setNoDelay(true);
    await once(client, 'connect');
    for (const p of pieces) {
      if (client.destroyed) break;
      client.write(p);
      await sleep(gapMs);
    }
    while (this.results.length === n) await sleep(5);
    return { client, outcome: await this.results[n]! };
  }
}

describe('readProxyHeader on real sockets', () => {
  const reader = new Reader();
  before(() => reader.start());
  after(() => reader.server.close());

  it('reads a v1 header split across reads and hands back the bytes after it, socket paused', async () => {
    const { client, outcome } = await reader.run([
      'PROXY TCP4 192.0.2.',
      '7 198.51.100.1 4000 ',
      '443\r\nHEL',
      'LO',
    ]);
    assert.deepEqual(outcome.read?.header.addresses, {
      family: 'inet',
      source: { host: '192.0.2.7', port: 4000 },
      destination: { host: '198.51.100.1', port: 443 },
    });
    assert.equal(outcome.read?.rest?.toString(), 'HEL');
    // Nothing was lost: the next bytes wait in the paused socket.
    assert.equal(outcome.socket.isPaused(), true);
    outcome.socket.resume();
    const [more] = await once(outcome.socket, 'data');
    assert.equal(String(more), 'LO');
    client.destroy();
    outcome.socket.destroy();
  });

  it('puts the bytes after a v2 header back into the socket with `unshift`', async () => {
    reader.options = { ...reader.options, unshift: true };
    const header = encodeV2(
      {
        addresses: {
          family: 'inet6',
          source: { host: '2001:db8::5', port: 5 },
          destination: { host: '::1', port: 6 },
        },
        tlvs: [{ type: 'authority', value: 'example.com' }],
      },
      { crc32c: true },
    );
    const whole = Buffer.concat([header, Buffer.from('payload')]);
    const { client, outcome } = await reader.run([whole.subarray(0, 10), whole.subarray(10)]);
    assert.equal(outcome.read?.rest, null);
    assert.deepEqual(outcome.read?.header.tlvs.at(-1), { type: 'authority', value: 'example.com' });
    outcome.socket.resume();
    const [data] = await once(outcome.socket, 'data');
    assert.equal(String(data), 'payload');
    client.destroy();
    outcome.socket.destroy();
    reader.options = { ...reader.options, unshift: false };
  });

  it('closes a malformed header, a late one and a cut one, counting each reason', async () => {
    const tele = captureTelemetry();
    const before = async (reason: string) =>
      (await tele.metricValue('proxy_protocol_rejected_total', { reason })) ?? 0;
    const counts = {
      bad_signature: await before('bad_signature'),
      timeout: await before('timeout'),
      truncated: await before('truncated'),
    };
    const bad = await reader.run(['GET / HTTP/1.1\r\n\r\n']);
    assert.ok(rejects('bad_signature')(bad.outcome.error));
    await closed(bad.client);

    reader.options = { ...reader.options, headerTimeout: 80 };
    const late = await reader.run(['PROXY TCP4 '], 5);
    assert.ok(rejects('timeout')(late.outcome.error));
    await closed(late.client);
    reader.options = { ...reader.options, headerTimeout: 5000 };

    const n = reader.results.length;
    const cut = net.connect(reader.port, '127.0.0.1');
    cut.on('error', () => {});
    cut.end('PROXY TCP4 1.2.3.4');
    while (reader.results.length === n) await sleep(5);
    assert.ok(rejects('truncated')((await reader.results[n]!).error));

    assert.equal(await before('bad_signature'), counts.bad_signature + 1);
    assert.equal(await before('timeout'), counts.timeout + 1);
    assert.equal(await before('truncated'), counts.truncated + 1);
    tele.stop();
  });

  it('refuses a v2 header that announces a datagram before a stream (bad_family); a LOCAL one passes', async () => {
    const dgram = encodeV2({
      transport: 'dgram',
      addresses: {
        family: 'inet',
        source: { host: '192.0.2.1', port: 1 },
        destination: { host: '127.0.0.1', port: 2 },
      },
    });
    const bad = await reader.run([dgram, 'payload']);
    assert.ok(rejects('bad_family')(bad.outcome.error));
    await closed(bad.client);
    const local = await reader.run([encodeV2({ command: 'local', addresses: null })]);
    assert.equal(local.outcome.read?.header.command, 'local');
    local.client.destroy();
    local.outcome.socket.destroy();
  });

  it('closes an untrusted peer at once, whatever it sends; an empty list trusts nobody', async () => {
    for (const cidrs of [['10.0.0.0/8', '::1/128'], []]) {
      reader.options = { ...reader.options, trusted: new TrustedPeers(cidrs) };
      const { client, outcome } = await reader.run(['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n'], 0);
      assert.ok(rejects('untrusted')(outcome.error));
      await closed(client);
      assert.equal(outcome.socket.bytesRead, 0, 'not a byte read from an untrusted peer');
    }
    reader.options = proxyReadOptions(parseSettings(ProxyProtocolSettings, []));
  });

  it('trusts a Unix-socket peer whatever trusted_cidrs says (the file permissions decide)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-pp-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sockPath = path.join(dir, 'pp.sock');
    const options = { ...reader.options, trusted: new TrustedPeers([]) };
    const server = net.createServer({ pauseOnConnect: true });
    const read = new Promise<ProxyHeaderRead>((resolve, reject) =>
      server.on('connection', (socket) => {
        socket.on('error', () => {});
        readProxyHeader(socket, options).then(resolve, reject);
      }),
    );
    server.listen(sockPath);
    await once(server, 'listening');
    after(() => server.close());
    const client = net.connect(sockPath);
    client.on('error', () => {});
    client.write('PROXY TCP4 192.0.2.7 198.51.100.1 4000 443\r\n');
    const { header } = await read;
    assert.equal(header.addresses?.family === 'unix' ? '' : header.addresses?.source.host, '192.0.2.7');
    client.destroy();
  });
});

describe('ProxyProtocolSettings and TrustedPeers', () => {
  it('defaults: off, loopback trusted, 5s for connections, v2 for datagrams', () => {
    const s = parseSettings(ProxyProtocolSettings, []);
    assert.deepEqual(s, { enabled: false, trusted_cidrs: ['127.0.0.0/8', '::1/128'], header_timeout: 5000 });
    const d = parseSettings(ProxyProtocolDatagramSettings, []);
    assert.deepEqual(d, { enabled: false, trusted_cidrs: ['127.0.0.0/8', '::1/128'], udp_format: 'v2' });
    assert.throws(() =>
      parseSettings(ProxyProtocolDatagramSettings, [{ source: 't', value: { udp_format: 'v1' } }]),
    );
    // Each section has only the keys that apply to its endpoints.
    assert.throws(() =>
      parseSettings(ProxyProtocolSettings, [{ source: 't', value: { udp_format: 'spp' } }]),
    );
    assert.throws(() =>
      parseSettings(ProxyProtocolDatagramSettings, [{ source: 't', value: { header_timeout: '1s' } }]),
    );
  });

  it('matches IPv4 ranges in their IPv4-mapped form too, and nothing that is not an address', () => {
    const t = new TrustedPeers(['127.0.0.0/8', '2001:db8::/32']);
    for (const ip of ['127.0.0.1', '::ffff:127.9.9.9', '2001:db8::1']) assert.equal(t.has(ip), true, ip);
    for (const ip of ['128.0.0.1', '::1', '64:ff9b::7f00:1', 'localhost', undefined])
      assert.equal(t.has(ip), false);
    assert.throws(() => new TrustedPeers(['10.0.0.0/33']), RangeError);
  });
});

describe('datagram headers', () => {
  const addresses = {
    family: 'inet' as const,
    source: { host: '192.0.2.9', port: 5353 },
    destination: { host: '203.0.113.4', port: 53 },
  };

  it('parses a PROXY v2 DGRAM header and answers behind the swapped header', () => {
    const dgram = Buffer.concat([encodeV2({ transport: 'dgram', addresses }), Buffer.from('query')]);
    const { header, payload } = parseDatagramHeader(dgram, 'v2');
    assert.deepEqual(header.addresses, addresses);
    assert.equal(Buffer.from(payload).toString(), 'query');
    const reply = parseDatagramHeader(encodeDatagramReply(header, Buffer.from('answer')), 'v2');
    assert.deepEqual(reply.header.addresses, {
      family: 'inet',
      source: addresses.destination,
      destination: addresses.source,
    });
    assert.equal(Buffer.from(reply.payload).toString(), 'answer');
  });

  /** `payload` behind an SPP header carrying `addresses`. */
  const sppDatagram = (payload: Buffer): Buffer =>
    encodeDatagramReply(
      {
        version: 'spp',
        command: 'proxy',
        family: 'inet',
        transport: 'dgram',
        addresses,
        tlvs: [],
        length: 38,
      },
      payload,
    );

  it('parses SPP and answers behind the swapped SPP header', () => {
    const { header, payload } = parseDatagramHeader(Buffer.concat([sppDatagram(Buffer.from('x'))]), 'spp');
    assert.equal(header.version, 'spp');
    assert.deepEqual(header.addresses?.source, addresses.destination);
    assert.equal(Buffer.from(payload).toString(), 'x');
  });

  it('drops a STREAM header, a short datagram, and an untrusted sender', () => {
    const stream = Buffer.concat([encodeV2({ transport: 'stream', addresses }), Buffer.from('q')]);
    assert.throws(() => parseDatagramHeader(stream, 'v2'), rejects('bad_family'));
    assert.throws(() => parseDatagramHeader(Buffer.alloc(20), 'spp'), rejects('bad_signature'));
    const ok = Buffer.concat([encodeV2({ transport: 'dgram', addresses }), Buffer.from('q')]);
    const trusted = new TrustedPeers(['127.0.0.0/8']);
    assert.throws(() => parseDatagramHeader(ok, 'v2', { peer: '192.0.2.1', trusted }), rejects('untrusted'));
    assert.equal(parseDatagramHeader(ok, 'v2', { peer: '127.0.0.1', trusted }).payload.length, 1);
  });

  it('counts a short datagram without a header as bad_signature, one cut inside its header as truncated', async () => {
    const tele = captureTelemetry();
    const count = async (reason: ProxyReason) =>
      (await tele.metricValue('proxy_protocol_rejected_total', { reason, endpoint: 'short' })) ?? 0;
    const whole = Buffer.from(encodeV2({ transport: 'dgram', addresses }));
    const spp = sppDatagram(Buffer.alloc(0));
    const cases: [Buffer, 'v2' | 'spp', ProxyReason][] = [
      [Buffer.from('ping'), 'v2', 'bad_signature'],
      [Buffer.from('ping'), 'spp', 'bad_signature'],
      [Buffer.alloc(0), 'v2', 'bad_signature'],
      [whole.subarray(0, 10), 'v2', 'truncated'],
      [whole.subarray(0, whole.length - 1), 'v2', 'truncated'],
      [spp.subarray(0, 20), 'spp', 'truncated'],
    ];
    for (const [datagram, format, reason] of cases) {
      const was = await count(reason);
      assert.throws(() => parseDatagramHeader(datagram, format, { endpoint: 'short' }), rejects(reason));
      assert.equal(await count(reason), was + 1, `${format} ${datagram.toString('hex')}`);
    }
    tele.stop();
  });
});
