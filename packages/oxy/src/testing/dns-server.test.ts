import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DNS_TYPE, decodeDnsMessage, encodeDnsMessage } from '../protocols/dns/codec.ts';
import { startDnsServer, type TestDnsServer } from './dns-server.ts';

describe('test DNS server (queried by the real c-ares resolver)', () => {
  let server: TestDnsServer;
  const resolver = new Resolver({ timeout: 200, tries: 1 });

  before(async () => {
    server = await startDnsServer({
      records: {
        'Example.test': { A: ['192.0.2.1', '192.0.2.2'], AAAA: ['2001:db8::1'], ttl: 42 },
        'v4only.test': { A: ['192.0.2.9'] },
      },
      nxdomain: ['gone.test'],
    });
    resolver.setServers([server.address]);
  });
  after(() => server.close());

  it('answers A and AAAA with the TTL, matching names case-insensitively', async () => {
    assert.deepEqual(await resolver.resolve4('example.test', { ttl: true }), [
      { address: '192.0.2.1', ttl: 42 },
      { address: '192.0.2.2', ttl: 42 },
    ]);
    assert.deepEqual(await resolver.resolve6('EXAMPLE.test', { ttl: true }), [
      { address: '2001:db8::1', ttl: 42 },
    ]);
    assert.equal(server.queries('example.test'), 2);
  });

  it('answers NXDOMAIN for unknown and listed names, NODATA for a missing type', async () => {
    await assert.rejects(resolver.resolve4('nope.test'), { code: 'ENOTFOUND' });
    server.setRecord('gone.test', { A: ['192.0.2.3'] });
    await assert.rejects(resolver.resolve4('gone.test'), { code: 'ENOTFOUND' });
    await assert.rejects(resolver.resolve6('v4only.test'), { code: 'ENODATA' });
  });

  it('fails on demand: SERVFAIL, REFUSED and silence', async () => {
    try {
      server.failMode = 'servfail';
      await assert.rejects(resolver.resolve4('example.test'), { code: 'ESERVFAIL' });
      server.failMode = 'refused';
      await assert.rejects(resolver.resolve4('example.test'), { code: 'EREFUSED' });
      server.failMode = 'silent';
      await assert.rejects(resolver.resolve4('example.test'), { code: 'ETIMEOUT' });
    } finally {
      server.failMode = 'none';
    }
  });

  it('serves TCP on the same port', async () => {
    const query = encodeDnsMessage({
      header: { id: 7, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, rcode: 0 },
      questions: [{ name: 'example.test', type: DNS_TYPE.A, class: 1 }],
      answers: [],
      authorities: [],
      additionals: [],
    });
    const socket = net.connect(server.port, '127.0.0.1');
    socket.write(Buffer.concat([Buffer.from([0, query.length]), query]));
    const chunks: Buffer[] = [];
    for await (const chunk of socket) {
      chunks.push(chunk as Buffer);
      const all = Buffer.concat(chunks);
      if (all.length >= 2 && all.length >= 2 + all.readUInt16BE(0)) break;
    }
    socket.destroy();
    const all = Buffer.concat(chunks);
    const msg = decodeDnsMessage(all.subarray(2));
    assert.equal(msg.header.id, 7);
    assert.deepEqual(
      msg.answers.map((r) => r.address),
      ['192.0.2.1', '192.0.2.2'],
    );
  });

  it('truncates a large UDP answer so the client retries over TCP', async () => {
    const many = Array.from({ length: 100 }, (_, i) => `10.0.${i >> 8}.${i & 0xff}`);
    server.setRecord('big.test', { A: many });
    server.resetCounts();
    const got = await resolver.resolve4('big.test');
    assert.deepEqual([...got].sort(), [...many].sort());
    assert.deepEqual(
      server.log.map((q) => q.transport),
      ['udp', 'tcp'],
    );
  });

  it('answers garbage with FORMERR instead of crashing', async () => {
    const client = dgram.createSocket('udp4');
    const got = new Promise<Buffer>((resolve) => client.once('message', resolve));
    client.send(Buffer.from([0x12, 0x34, 0, 0, 0, 1]), server.port, '127.0.0.1');
    const msg = decodeDnsMessage(await got);
    client.close();
    assert.equal(msg.header.id, 0x1234);
    assert.equal(msg.header.rcode, 1);
  });
});
