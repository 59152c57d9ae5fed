/**
 * IP tunnels end to end at the packet level: a real Oxy with `ip_seqpacket` and `ip_gue`
 * endpoints, real SEQPACKET and UDP clients that speak raw IP packets built by our codecs, real
 * UDP and DNS peers on loopback, and a real SEQPACKET off-ramp peer. No kernel network stack on
 * the client side here (test/l3-netns.test.ts has that); what this proves is the pipeline's
 * decisions packet by packet: the UDP upgrade and its downgrade, the gateway's echo, refusals
 * as RST and ICMP, blocked CIDRs, redirects, the off-ramp, GUE keying, hooks, audit records.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type SeqpacketSocket, seqpacket } from 'native';
import { composeApps } from '../src/compose.ts';
import { defineApp, IngressDecision, IpFlowDecision, IpPacketVerdict } from '../src/index.ts';
import { decodeGue, encodeGue } from '../src/protocols/gue/codec.ts';
import { ICMP4, ICMP6, parseIcmp } from '../src/protocols/icmp/icmp.ts';
import { buildIp, buildTcpPacket, buildUdpPacket, icmpMessage } from '../src/protocols/ip/builder.ts';
import { l4ChecksumOk } from '../src/protocols/ip/l4-checksum.ts';
import { IP_PROTO, type IpPacket, parseIp } from '../src/protocols/ip/packet.ts';
import { parseTcpOf } from '../src/protocols/tcp/header.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';

const CLIENT = '10.7.0.2';
const REFUSED = '198.18.0.66';
const REDIRECTED = '198.18.0.53';
const FORWARDED = '198.18.0.99';

let dir: string;
let echo: dgram.Socket;
let echoPort: number;
let offramp: seqpacket.SeqpacketServer;
const offrampSeen: Buffer[] = [];
const tunnels: Uint8Array[] = [];
const flowEnds: string[] = [];
let defaults: AppUnderTest;
let hooked: AppUnderTest;

const hookedApp = defineApp({
  name: 'l3-hooked',
  version: '1.0.0',
  description: 'flow hooks: refuse one destination, redirect one, forward one; tunnel context checked',
  start: () => ({
    ipTunnel: {
      handleTunnel: (context, ctx) => {
        tunnels.push(Buffer.from(context));
        (ctx.ext as { tenant?: string }).tenant = Buffer.from(context).toString();
        return Buffer.from(context).toString() === 'deny'
          ? IngressDecision.block('no')
          : IngressDecision.allow();
      },
    },
    ipFlow: {
      handleFlow: async (flow) => {
        if (flow.dst.host === REFUSED) return IpFlowDecision.reject('test');
        if (flow.dst.host === REDIRECTED)
          return IpFlowDecision.redirect({ host: '127.0.0.1', port: echoPort });
        if (flow.dst.host === FORWARDED) return IpFlowDecision.forward();
        return IpFlowDecision.upgrade();
      },
      handlePacket: (packet, direction, flow) => {
        // Rewrites the TTL of replies to 33: the framework fixes the IPv4 header checksum.
        if (direction === 'down' && flow.version === 4 && flow.protocol === 'udp') {
          packet[8] = 33;
          return IpPacketVerdict.rewritten();
        }
        return undefined;
      },
      handleFlowEnd: (flow, info) => {
        flowEnds.push(`${flow.dst.host}:${flow.dst.port} ${info.decision} ${info.reason}`);
      },
    },
  }),
});

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'oxy-l3-'));
  echo = dgram.createSocket('udp4');
  echo.on('message', (m, from) =>
    echo.send(Buffer.concat([Buffer.from('echo:'), m]), from.port, from.address),
  );
  echo.bind(0, '127.0.0.1');
  await once(echo, 'listening');
  echoPort = echo.address().port;
  offramp = seqpacket.listen(path.join(dir, 'offramp.sock'));
  offramp.on('connection', (s) => {
    s.on('messages', (ms) => {
      for (const m of ms) {
        offrampSeen.push(m);
        // Answer every UDP packet as its destination would.
        if (m[0] !== 0x7b) {
          const p = parseIp(m);
          const u = udpPayload(p);
          s.send(
            buildUdpPacket(
              FORWARDED,
              p.buf.readUInt16BE(p.l4Offset + 2),
              CLIENT,
              p.buf.readUInt16BE(p.l4Offset),
              Buffer.concat([Buffer.from('off:'), u]),
            ),
          );
        }
      }
    });
  });
  defaults = await startApp(
    defineApp({ name: 'l3-default', version: '1.0.0', description: 'no hooks', start: () => ({}) }),
    {
      settings: {
        endpoints: {
          main: { addr: '127.0.0.1:0' },
          ip: { protocol: 'ip_seqpacket', addr: path.join(dir, 'default.sock') },
          gue: { protocol: 'ip_gue', addr: '127.0.0.1:0' },
        },
      },
    },
  );
  hooked = await startApp(hookedApp, {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: {
          protocol: 'ip_seqpacket',
          addr: path.join(dir, 'hooked.sock'),
          ip: { offramp: path.join(dir, 'offramp.sock') },
        },
      },
    },
  });
});

after(async () => {
  // The later app first: an app's leak check sees every handle opened while it ran.
  await hooked?.stop();
  await defaults?.stop();
  offramp?.close();
  echo?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A SEQPACKET tunnel client: its context sent, packets read into a queue. */
async function tunnel(
  sock: string,
  context = 'ctx',
): Promise<{ s: SeqpacketSocket; next(ms?: number): Promise<IpPacket>; closed: Promise<void> }> {
  const s = await seqpacket.connect(sock);
  const queue: Buffer[] = [];
  let wake: (() => void) | null = null;
  s.on('messages', (ms) => {
    queue.push(...ms);
    wake?.();
  });
  const closed = once(s, 'close').then(() => {});
  s.send(Buffer.from(context));
  return {
    s,
    closed,
    async next(ms = 3000) {
      const deadline = Date.now() + ms;
      while (queue.length === 0) {
        if (Date.now() > deadline) throw new Error('no packet from the tunnel');
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return parseIp(queue.shift() as Buffer);
    },
  };
}

function echoRequest(src: string, dst: string, id: number, v6 = false): Buffer {
  const type = v6 ? ICMP6.ECHO_REQUEST : ICMP4.ECHO_REQUEST;
  return buildIp({
    src,
    dst,
    protocol: v6 ? IP_PROTO.ICMPV6 : IP_PROTO.ICMP,
    payload: icmpMessage(type, 0, (id << 16) | 1, Buffer.from('ping')),
  });
}

const ipText = (p: IpPacket, off: number): string =>
  p.version === 4 ? [...p.buf.subarray(off, off + 4)].join('.') : 'v6';

test('the default app upgrades a UDP flow to 127.0.0.1 and downgrades the reply into the tunnel, with an ip-udp audit record', async () => {
  const t = await tunnel(path.join(dir, 'default.sock'));
  t.s.send(buildUdpPacket(CLIENT, 40000, '127.0.0.1', echoPort, Buffer.from('hello')));
  const r = await t.next();
  assert.equal(r.protocol, IP_PROTO.UDP);
  assert.equal(ipText(r, r.srcOffset), '127.0.0.1');
  assert.equal(ipText(r, r.dstOffset), CLIENT);
  assert.equal(r.buf.readUInt16BE(r.l4Offset), echoPort);
  assert.equal(r.buf.readUInt16BE(r.l4Offset + 2), 40000);
  assert.ok(l4ChecksumOk(r));
  assert.equal(udpPayload(r).toString(), 'echo:hello');
  t.s.close();
  const records = await defaults.waitForAudit(1);
  const rec = records.find((x) => x.request_kind === 'ip-udp');
  assert.ok(rec, 'an ip-udp record');
  assert.equal(rec.kind, 'udp_session');
  assert.equal(rec.target, `127.0.0.1:${echoPort}`);
  assert.equal(rec.status, 200);
  assert.equal(rec.datagrams_up, 1);
  assert.equal(rec.datagrams_down, 1);
});

test('ICMP echo to the gateway (v4 and v6) is answered; to anyone else it is dropped', async () => {
  const t = await tunnel(path.join(dir, 'default.sock'));
  t.s.send(echoRequest(CLIENT, '100.64.0.1', 7));
  const r = await t.next();
  const m = parseIcmp(r);
  assert.equal(m.type, ICMP4.ECHO_REPLY);
  assert.equal(ipText(r, r.srcOffset), '100.64.0.1');
  assert.ok(l4ChecksumOk(r));
  t.s.send(echoRequest('fd00::2', 'fd00::1', 8, true));
  const r6 = await t.next();
  assert.equal(parseIcmp(r6).type, ICMP6.ECHO_REPLY);
  t.s.send(echoRequest(CLIENT, '198.18.0.1', 9));
  t.s.send(echoRequest(CLIENT, '100.64.0.1', 10));
  // The only answer is the gateway's: the other echo was dropped.
  const r2 = await t.next();
  assert.equal(ipText(r2, r2.srcOffset), '100.64.0.1');
  assert.equal(r2.buf.readUInt16BE(r2.l4Offset + 4), 10);
  t.s.close();
});

test('blocked CIDRs apply to upgraded UDP flows: the client gets ICMP administratively prohibited', async () => {
  const blocked = await startApp(
    defineApp({ name: 'l3-blocked', version: '1.0.0', description: 'default blocklist', start: () => ({}) }),
    {
      settings: {
        egress: { blocked_cidrs: ['127.0.0.0/8'] },
        endpoints: {
          main: { addr: '127.0.0.1:0' },
          ip: { protocol: 'ip_seqpacket', addr: path.join(dir, 'blocked.sock') },
        },
      },
    },
  );
  try {
    const t = await tunnel(path.join(dir, 'blocked.sock'));
    t.s.send(buildUdpPacket(CLIENT, 40002, '127.0.0.1', echoPort, Buffer.from('x')));
    const r = await t.next();
    const m = parseIcmp(r);
    assert.equal(m.type, ICMP4.DEST_UNREACH);
    assert.equal(m.code, 13, 'communication administratively prohibited');
    t.s.close();
    const rec = (await blocked.waitForAudit(1)).find((x) => x.request_kind === 'ip-udp');
    assert.equal(rec?.status, 403);
  } finally {
    await blocked.stop();
  }
});

test('flow hooks: reject (RST and ICMP), redirect, forward to the off-ramp; tunnel context; handlePacket rewrite', async () => {
  const t = await tunnel(path.join(dir, 'hooked.sock'), 'tenant-a');
  t.s.send(buildTcpPacket(CLIENT, REFUSED, { srcPort: 40010, dstPort: 80, seq: 5, flags: 0x02 }));
  const rst = await t.next();
  assert.equal(parseTcpOf(rst).flags & 0x04, 0x04);
  t.s.send(buildUdpPacket(CLIENT, 40011, REFUSED, 53, Buffer.from('q')));
  const un = await t.next();
  assert.equal(parseIcmp(un).type, ICMP4.DEST_UNREACH);
  assert.equal(parseIcmp(un).code, 13);

  t.s.send(buildUdpPacket(CLIENT, 40012, REDIRECTED, 53, Buffer.from('redirected')));
  const red = await t.next();
  assert.equal(
    ipText(red, red.srcOffset),
    REDIRECTED,
    'the reply comes from the address the client wrote to',
  );
  assert.equal(udpPayload(red).toString(), 'echo:redirected');
  assert.equal(red.ttl, 33, 'handlePacket rewrote the TTL');
  parseIp(red.buf); // the header checksum was fixed (parseIp verifies it)
  assert.ok(l4ChecksumOk(red));

  t.s.send(buildUdpPacket(CLIENT, 40013, FORWARDED, 7, Buffer.from('fwd')));
  const fwd = await t.next();
  assert.equal(udpPayload(fwd).toString(), 'off:fwd');
  const hello = JSON.parse(offrampSeen[0]?.toString() ?? '{}') as { endpoint?: string };
  assert.equal(hello.endpoint, 'ip');
  assert.equal(offrampSeen.length, 2, 'the context, then the packet as sent');
  assert.deepEqual(
    tunnels.map((c) => Buffer.from(c).toString()),
    ['tenant-a'],
  );
  t.s.close();
  await t.closed;
  const deadline = Date.now() + 3000;
  while (flowEnds.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(
    flowEnds.sort(),
    [
      `${FORWARDED}:7 forward shutdown`,
      `${REDIRECTED}:53 redirect shutdown`,
      `${REFUSED}:53 reject shutdown`,
      `${REFUSED}:80 reject shutdown`,
    ].sort(),
  );
});

test('IpTunnelHook.handleTunnel blocking closes the SEQPACKET connection', async () => {
  const t = await tunnel(path.join(dir, 'hooked.sock'), 'deny');
  t.s.send(buildUdpPacket(CLIENT, 40020, '127.0.0.1', echoPort, Buffer.from('x')));
  await t.closed;
});

test('malformed packets are dropped and the tunnel goes on', async () => {
  const t = await tunnel(path.join(dir, 'default.sock'));
  t.s.send([Buffer.from([0x45, 0, 0]), Buffer.alloc(40, 0x60), Buffer.from('garbage-garbage-garbage')]);
  t.s.send(echoRequest(CLIENT, '100.64.0.1', 11));
  const r = await t.next();
  assert.equal(parseIcmp(r).type, ICMP4.ECHO_REPLY);
  t.s.close();
});

test('GUE: tunnels are keyed by sender and extension fields, replies carry the same fields', async () => {
  const u = dgram.createSocket('udp4');
  u.bind(0, '127.0.0.1');
  await once(u, 'listening');
  try {
    const { port } = defaults.proxy.address('gue');
    const ext = Buffer.from([0, 0, 0, 42]);
    const got: Buffer[] = [];
    u.on('message', (m) => got.push(m));
    u.send(
      encodeGue(buildUdpPacket(CLIENT, 40030, '127.0.0.1', echoPort, Buffer.from('gue0')), {
        extensions: ext,
      }),
      port,
      '127.0.0.1',
    );
    u.send(encodeGue(echoRequest(CLIENT, '100.64.0.1', 12), { variant: 1 }), port, '127.0.0.1');
    u.send(Buffer.from([0xc0, 1, 2, 3]), port, '127.0.0.1'); // unknown variant: dropped
    const deadline = Date.now() + 3000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(got.length, 2);
    const byVariant = new Map(got.map((g) => [decodeGue(g).variant, decodeGue(g)]));
    const v0 = byVariant.get(0);
    assert.ok(v0 !== undefined && v0.variant === 0);
    assert.deepEqual(v0.extensions, ext);
    assert.equal(udpPayload(parseIp(v0.payload)).toString(), 'echo:gue0');
    const v1 = byVariant.get(1);
    assert.equal(parseIcmp(parseIp(v1?.payload as Buffer)).type, ICMP4.ECHO_REPLY);
  } finally {
    u.close();
  }
});

test('composed apps: the first flow answer other than upgrade wins, each app sees the tunnel and its own ext', async () => {
  const seen: string[] = [];
  const a = defineApp({
    name: 'a',
    version: '0',
    description: 'rejects one destination',
    start: () => ({
      ipTunnel: {
        handleTunnel: (_c, ctx) => {
          (ctx.ext as { who?: string }).who = 'a';
          seen.push('a.tunnel');
          return IngressDecision.allow();
        },
      },
      ipFlow: {
        handleFlow: (flow) =>
          flow.dst.host === REFUSED ? IpFlowDecision.reject('a') : IpFlowDecision.upgrade(),
      },
    }),
  });
  const b = defineApp({
    name: 'b',
    version: '0',
    description: 'redirects everything to the echo',
    start: () => ({
      ipTunnel: {
        handleTunnel: (_c, ctx) => {
          seen.push(`b.tunnel ext.who=${(ctx.ext as { who?: string }).who}`);
          return IngressDecision.allow();
        },
      },
      ipFlow: {
        handleFlow: () => IpFlowDecision.redirect({ host: '127.0.0.1', port: echoPort }),
        handleFlowEnd: (flow, info) => seen.push(`b.end ${flow.dst.host} ${info.decision}`),
      },
    }),
  });
  const composed = await startApp(composeApps(a, b), {
    settings: {
      endpoints: {
        main: { addr: '127.0.0.1:0' },
        ip: { protocol: 'ip_seqpacket', addr: path.join(dir, 'composed.sock') },
      },
    },
  });
  try {
    const t = await tunnel(path.join(dir, 'composed.sock'));
    t.s.send(buildUdpPacket(CLIENT, 40040, REFUSED, 53, Buffer.from('x')));
    assert.equal(parseIcmp(await t.next()).code, 13);
    t.s.send(buildUdpPacket(CLIENT, 40041, '198.18.0.5', 53, Buffer.from('y')));
    assert.equal(udpPayload(await t.next()).toString(), 'echo:y');
    t.s.close();
    await t.closed;
    const deadline = Date.now() + 3000;
    while (seen.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seen.slice(0, 2), ['a.tunnel', 'b.tunnel ext.who=undefined']);
    assert.deepEqual(seen.slice(2).sort(), [`b.end ${REFUSED} reject`, 'b.end 198.18.0.5 redirect'].sort());
  } finally {
    await composed.stop();
  }
});
