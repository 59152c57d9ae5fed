/**
 * A graceful restart of IP tunnel endpoints, with real processes: the `ip_seqpacket` listener
 * and the `ip_gue` UDP socket go to the new process as the same kernel sockets (the socket
 * file keeps its inode, the GUE port stays), a client connecting over and over during the
 * hand-over is never refused, a tunnel opened before the restart keeps working in the old
 * process until `drain_timeout` and is then closed, and tunnels opened after are answered by
 * the new one. Answers are the gateway's ICMP echo replies (the default app's pipeline).
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type SeqpacketSocket, seqpacket } from 'native';
import { ServiceUnderTest, waitExit } from '../../foundations/test/fixtures/restart-harness.ts';
import { decodeGue, encodeGue } from '../src/protocols/gue/codec.ts';
import { ICMP4, parseIcmp } from '../src/protocols/icmp/icmp.ts';
import { buildIp, icmpMessage } from '../src/protocols/ip/builder.ts';
import { IP_PROTO, parseIp } from '../src/protocols/ip/packet.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');
const CLIENT = '10.7.0.2';
const GATEWAY = '100.64.0.1';

function echoRequest(id: number, seq: number): Buffer {
  return buildIp({
    src: CLIENT,
    dst: GATEWAY,
    protocol: IP_PROTO.ICMP,
    payload: icmpMessage(ICMP4.ECHO_REQUEST, 0, (id << 16) | seq, Buffer.from('ping')),
  });
}

/** The ICMP echo reply's identifier and sequence number, or null for anything else. */
function echoReply(packet: Buffer): { id: number; seq: number } | null {
  const p = parseIp(packet);
  if (p.protocol !== IP_PROTO.ICMP) return null;
  const m = parseIcmp(p);
  if (m.type !== ICMP4.ECHO_REPLY) return null;
  return { id: p.buf.readUInt16BE(p.l4Offset + 4), seq: p.buf.readUInt16BE(p.l4Offset + 6) };
}

/** A SEQPACKET tunnel whose echo replies are awaited by sequence number. */
async function tunnel(sock: string, id: number) {
  const s = await seqpacket.connect(sock);
  const replies = new Set<number>();
  s.on('messages', (ms) => {
    for (const m of ms) {
      const r = echoReply(m);
      if (r?.id === id) replies.add(r.seq);
    }
  });
  const closed = once(s, 'close');
  s.send(Buffer.from('ctx'));
  return {
    s,
    closed,
    async ping(seq: number, ms = 5000): Promise<void> {
      s.send(echoRequest(id, seq));
      const deadline = Date.now() + ms;
      while (!replies.has(seq)) {
        if (Date.now() > deadline) throw new Error(`no echo reply ${id}/${seq}`);
        await sleep(10);
      }
    },
  };
}

/** Sends a GUE echo request from `u` to `port` until its reply comes back (UDP may lose one). */
async function guePing(u: dgram.Socket, port: number, seq: number): Promise<void> {
  const got = new Promise<void>((resolve) => {
    const on = (m: Buffer): void => {
      const r = echoReply(Buffer.from(decodeGue(m).payload));
      if (r?.id === 77 && r.seq === seq) {
        u.off('message', on);
        resolve();
      }
    };
    u.on('message', on);
  });
  for (let i = 0; i < 50; i++) {
    u.send(encodeGue(echoRequest(77, seq), { variant: 1 }), port, '127.0.0.1');
    const answered = await Promise.race([got.then(() => true), sleep(100).then(() => false)]);
    if (answered) return;
  }
  throw new Error(`no GUE echo reply ${seq}`);
}

describe('oxy graceful restart of ip_seqpacket and ip_gue endpoints', () => {
  const services: ServiceUnderTest[] = [];
  const sockets: SeqpacketSocket[] = [];
  const u = dgram.createSocket('udp4');
  after(() => {
    u.close();
    for (const s of sockets) s.close();
    for (const s of services) s.cleanup();
  });

  it('hands both sockets over: same inode and port, never refused, old tunnels kept until drain_timeout', async () => {
    let sock = '';
    const svc = new ServiceUnderTest((restartSock) => {
      sock = path.join(path.dirname(restartSock), 'tun.sock');
      return [
        'endpoints:',
        '  main:',
        '    addr: 127.0.0.1:0',
        '  tun:',
        '    protocol: ip_seqpacket',
        `    addr: ${sock}`,
        '  gue:',
        '    protocol: ip_gue',
        '    addr: 127.0.0.1:0',
        'egress:',
        '  blocked_cidrs: []',
        'restart:',
        `  socket: ${restartSock}`,
        '  drain_timeout: 3s',
        'telemetry:',
        '  server:',
        '    enabled: false',
        '',
      ].join('\n');
    }, APP);
    services.push(svc);
    const first = await svc.start();
    let guePort = 0;
    for (let i = 0; i < 200 && guePort === 0; i++) {
      const m = /endpoint listening endpoint=gue addr=127\.0\.0\.1:(\d+)/.exec(svc.stdoutText + svc.stderr);
      if (m) guePort = Number(m[1]);
      else await sleep(50);
    }
    assert.ok(guePort > 0, `no ip_gue endpoint line in:\n${svc.stdoutText}${svc.stderr}`);
    const inode = fs.statSync(sock).ino;

    const before = await tunnel(sock, 1);
    sockets.push(before.s);
    await before.ping(1);
    u.bind(0, '127.0.0.1');
    await once(u, 'listening');
    await guePing(u, guePort, 1);

    // Connect over and over while the restart runs: every attempt must be accepted.
    let attempts = 0;
    const refusals: string[] = [];
    let probing = true;
    const probe = (async () => {
      while (probing) {
        attempts++;
        try {
          (await seqpacket.connect(sock, { timeoutMs: 2000 })).close();
        } catch (e) {
          refusals.push((e as Error).message);
        }
        await sleep(2);
      }
    })();
    const r = await svc.restart();
    await sleep(200);
    probing = false;
    await probe;
    assert.equal(r.code, 0, `restart: ${r.stdout}${r.stderr}`);
    const second = await svc.waitGeneration(2);
    assert.notEqual(second.pid, first.pid);
    assert.deepEqual(refusals, [], `${refusals.length} of ${attempts} connects failed`);
    assert.ok(attempts > 10, `the probe ran (${attempts} connects)`);
    assert.equal(fs.statSync(sock).ino, inode, 'the same socket file, never re-created');
    assert.match(
      svc.stdoutText + svc.stderr,
      new RegExp(`endpoint=gue addr=127\\.0\\.0\\.1:${guePort}[^\\d]`),
    );

    // The old tunnel is still served by the old process; a new one by the new process.
    await before.ping(2);
    const afterwards = await tunnel(sock, 2);
    sockets.push(afterwards.s);
    await afterwards.ping(1);
    await guePing(u, guePort, 2);

    // At drain_timeout the old process closes the tunnel it kept and exits.
    const started = Date.now();
    await before.closed;
    assert.ok(Date.now() - started < 6000, 'closed within drain_timeout');
    assert.ok(await waitExit(first.pid, 5000), 'the old process exited');
    await afterwards.ping(2);
    await guePing(u, guePort, 3);
    assert.equal(fs.statSync(sock).ino, inode, 'the old process left the socket file alone');
  });
});
