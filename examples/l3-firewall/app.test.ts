/**
 * The layer-3 firewall example: its flow decision from each rule, and one tunnel end to end
 * (an allowed UDP flow answered, a disallowed port refused with a RST, a blocked host refused
 * with ICMP "prohibited").
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { seqpacket } from 'native';
import { startApp } from 'oxy/testing';
import { parseIcmp } from '../../packages/oxy/src/protocols/icmp/icmp.ts';
import { buildTcpPacket, buildUdpPacket } from '../../packages/oxy/src/protocols/ip/builder.ts';
import { type IpPacket, parseIp } from '../../packages/oxy/src/protocols/ip/packet.ts';
import { parseTcpOf } from '../../packages/oxy/src/protocols/tcp/header.ts';
import { udpPayload } from '../../packages/oxy/src/protocols/udp/header.ts';
import { app } from './app.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3fw-'));
const echo = dgram.createSocket('udp4');
echo.on('message', (m, from) => echo.send(m, from.port, from.address));
echo.bind(0, '127.0.0.1');
await once(echo, 'listening');
const echoPort = echo.address().port;
const sock = path.join(dir, 'fw.sock');
const proxy = await startApp(app, {
  settings: {
    endpoints: { main: { addr: '127.0.0.1:0' }, tunnels: { protocol: 'ip_seqpacket', addr: sock } },
    app: {
      blocked_hosts: ['198.18.0.66'],
      blocked_cidrs: ['203.0.113.0/24'],
      tcp_ports: [80],
      udp_ports: [echoPort],
    },
  },
});
after(async () => {
  await proxy.stop();
  echo.close();
  rmSync(dir, { recursive: true, force: true });
});

async function exchange(packet: Buffer): Promise<IpPacket> {
  const s = await seqpacket.connect(sock);
  s.send(Buffer.from('tenant'));
  s.send(packet);
  const [ms] = (await once(s, 'messages')) as [Buffer[]];
  s.close();
  return parseIp(ms[0] as Buffer);
}

test('an allowed UDP port is upgraded and answered', async () => {
  const r = await exchange(buildUdpPacket('10.7.0.2', 4000, '127.0.0.1', echoPort, Buffer.from('dns?')));
  assert.equal(udpPayload(r).toString(), 'dns?');
});

test('a TCP port not allowed is refused with a RST', async () => {
  const r = await exchange(
    buildTcpPacket('10.7.0.2', '127.0.0.1', { srcPort: 4001, dstPort: 22, seq: 1, flags: 0x02 }),
  );
  assert.equal(parseTcpOf(r).flags & 0x04, 0x04);
});

test('a blocked host and a blocked CIDR are refused with ICMP administratively prohibited', async () => {
  for (const dst of ['198.18.0.66', '203.0.113.9']) {
    const r = await exchange(buildUdpPacket('10.7.0.2', 4002, dst, echoPort, Buffer.from('x')));
    const m = parseIcmp(r);
    assert.equal(m.type, 3, dst);
    assert.equal(m.code, 13, dst);
  }
});
