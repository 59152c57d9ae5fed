/**
 * The recorded hook order: a real proxy runs an app that implements every hook (answering the
 * defaults), real clients drive each kind of traffic, and the hooks recorded for the client's
 * connection must equal `HOOK_ORDERS[kind]` exactly. `docs/hooks.md` draws its sequence
 * diagrams from the same data, so a change in the order fails here until the data (and then
 * the generated reference) is updated.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { seqpacket } from 'native';
import { ConnectDirective, defineApp, EgressDecision, IngressDecision } from '../src/index.ts';
import { createMasqueClient } from '../src/masque/client.ts';
import { buildIp, buildUdpPacket, icmpMessage } from '../src/protocols/ip/builder.ts';
import { IP_PROTO, parseIp } from '../src/protocols/ip/packet.ts';
import { udpPayload } from '../src/protocols/udp/header.ts';
import { type AppUnderTest, startApp } from '../src/testing/app.ts';
import {
  connectTunnel,
  connectTunnelH2,
  type H2Tunnel,
  proxyRequest,
  readBytes,
  readUntil,
} from '../src/testing/clients.ts';
import { HOOK_ORDERS, type TrafficKind, tracingHooks } from '../src/testing/hook-orders.ts';
import { type HttpUpstream, startHttpUpstream, startTcpEcho, type TcpPeer } from '../src/testing/peers.ts';

/** Connections from this address are blocked by the ingress hook. */
const BLOCKED_CLIENT = '127.0.0.2';

const app = defineApp({
  name: 'hook-order',
  version: '1.0.0',
  description: 'implements every hook with the default answers, except a few blocks the tests ask for',
  start: () =>
    tracingHooks({
      ingress: {
        handleConnection: (ctx) =>
          ctx.client.host === BLOCKED_CLIENT ? IngressDecision.block('test block') : IngressDecision.allow(),
      },
      httpRequest: {
        handleProxyConnectRequest: (head) =>
          head.authority.startsWith('denied.')
            ? ConnectDirective.block(403, 'test refusal')
            : ConnectDirective.allow(),
      },
      egress: {
        handleConnection: (target) =>
          target.host.startsWith('blocked.')
            ? EgressDecision.block('test block')
            : EgressDecision.direct(target),
      },
    }),
});

let oxy: AppUnderTest;
let udpEcho: dgram.Socket;
let udpEcho6: dgram.Socket;
let echo: TcpPeer;
let upstream: HttpUpstream;
const ipDir = mkdtempSync(path.join(tmpdir(), 'oxy-hook-order-'));
const ipSocket = path.join(ipDir, 'ip.sock');

before(async () => {
  echo = await startTcpEcho();
  upstream = await startHttpUpstream({ '/x': { body: 'hello' } }, '127.0.0.1', {
    upgrade(_req, socket) {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
      socket.pipe(socket);
    },
  });
  // `localhost` resolves to ::1 and 127.0.0.1, and UDP has no Happy Eyeballs: the first
  // address is used, so the echo answers on both, on one port.
  udpEcho = dgram.createSocket('udp4');
  udpEcho.on('message', (m, from) => udpEcho.send(m, from.port, from.address));
  udpEcho.bind(0, '127.0.0.1');
  await once(udpEcho, 'listening');
  udpEcho6 = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  udpEcho6.on('message', (m, from) => udpEcho6.send(m, from.port, from.address));
  udpEcho6.bind(udpEcho.address().port, '::1');
  await once(udpEcho6, 'listening');
  oxy = await startApp(app, {
    settings: {
      endpoints: {
        main: {},
        raw: { protocol: 'tcp', tcp: { target: `localhost:${echo.port}` } },
        ip: { protocol: 'ip_seqpacket', addr: ipSocket },
        dgram: {
          protocol: 'udp',
          addr: '127.0.0.1:0',
          udp: { target: `localhost:${udpEcho.address().port}`, idle_timeout: '200ms' },
        },
      },
    },
  });
});

after(async () => {
  await echo.close();
  udpEcho.close();
  udpEcho6.close();
  await upstream.close();
  await oxy.stop();
  rmSync(ipDir, { recursive: true, force: true });
});

/**
 * Runs `drive` (which opens exactly one client connection and closes it), then asserts the
 * hooks recorded for that connection, once its close hook has fired.
 */
async function expectOrder(kind: TrafficKind, drive: () => Promise<void>): Promise<void> {
  oxy.recorder.clear();
  await drive();
  const conns = oxy.recorder.connections();
  assert.equal(conns.length, 1, `expected one connection, saw:\n${oxy.recorder.transcript()}`);
  const conn = conns[0]!;
  await oxy.recorder.waitFor(conn, 'ingress.handleConnectionClose');
  oxy.recorder.expectHooks(conn, HOOK_ORDERS[kind]);
}

test('CONNECT over HTTP/1.1 fires the hooks in HOOK_ORDERS.connect_http1', async () => {
  await expectOrder('connect_http1', async () => {
    const tunnel = await connectTunnel(oxy.address(), `localhost:${echo.port}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.write('ping');
    assert.equal((await readBytes(tunnel.socket, 4)).toString(), 'ping');
    tunnel.socket.end();
  });
});

test('an absolute-form request fires the hooks in HOOK_ORDERS.forward_http1', async () => {
  await expectOrder('forward_http1', async () => {
    const res = await proxyRequest(oxy.address(), `http://localhost:${upstream.port}/x`);
    assert.equal(res.status, 200);
    assert.equal(res.text, 'hello');
  });
});

test('a request with a body fires the hooks in HOOK_ORDERS.forward_http1_body', async () => {
  await expectOrder('forward_http1_body', async () => {
    const res = await proxyRequest(oxy.address(), `http://localhost:${upstream.port}/x`, {
      method: 'POST',
      body: 'some body',
    });
    assert.equal(res.status, 200);
  });
});

test('two requests on a keep-alive connection fire the hooks in HOOK_ORDERS.forward_http1_keepalive', async () => {
  await expectOrder('forward_http1_keepalive', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await proxyRequest(oxy.address(), `http://localhost:${upstream.port}/x`, { agent });
        assert.equal(res.status, 200);
      }
    } finally {
      agent.destroy();
    }
  });
});

test('an Upgrade request fires the hooks in HOOK_ORDERS.upgrade_http1', async () => {
  await expectOrder('upgrade_http1', async () => {
    const [host, port] = oxy.address().split(':');
    const socket = net.connect({ host, port: Number(port) });
    const authority = `localhost:${upstream.port}`;
    socket.write(
      `GET http://${authority}/ws HTTP/1.1\r\nHost: ${authority}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`,
    );
    assert.match(await readUntil(socket, '\r\n\r\n'), /^HTTP\/1\.1 101 /);
    socket.write('ping');
    assert.equal((await readBytes(socket, 4)).toString(), 'ping');
    socket.end();
    await once(socket, 'close');
  });
});

test('a connection blocked by ingress fires the hooks in HOOK_ORDERS.ingress_blocked', async () => {
  await expectOrder('ingress_blocked', async () => {
    // The app blocks clients from 127.0.0.2 (all of 127/8 is loopback on Linux).
    const [host, port] = oxy.address().split(':');
    const socket = net.connect({ host, port: Number(port), localAddress: BLOCKED_CLIENT });
    socket.on('error', () => {});
    socket.resume();
    await once(socket, 'close');
  });
});

test('a CONNECT refused by the request hook fires the hooks in HOOK_ORDERS.connect_denied', async () => {
  await expectOrder('connect_denied', async () => {
    const tunnel = await connectTunnel(oxy.address(), 'denied.localhost:443');
    assert.equal(tunnel.status, 403);
    tunnel.socket.destroy();
  });
});

test('a CONNECT blocked by egress fires the hooks in HOOK_ORDERS.connect_blocked', async () => {
  await expectOrder('connect_blocked', async () => {
    const tunnel = await connectTunnel(oxy.address(), 'blocked.localhost:443');
    assert.equal(tunnel.status, 403);
    tunnel.socket.destroy();
  });
});

test('a CONNECT stream over HTTP/2 fires the hooks in HOOK_ORDERS.connect_http2', async () => {
  await expectOrder('connect_http2', async () => {
    const h2 = await connectTunnelH2(oxy.address(), `localhost:${echo.port}`);
    assert.equal(h2.status, 200);
    h2.stream.write('ping');
    assert.equal((await readBytes(h2.stream, 4)).toString(), 'ping');
    h2.stream.end();
    await new Promise<void>((resolve) => h2.session.close(() => resolve()));
  });
});

test('two CONNECT streams on one HTTP/2 session fire the hooks in HOOK_ORDERS.connect_http2_two_streams', async () => {
  await expectOrder('connect_http2_two_streams', async () => {
    const first = await connectTunnelH2(oxy.address(), `localhost:${echo.port}`);
    await pingAndEnd(first);
    await pingAndEnd(await connectTunnelH2(first.session, `localhost:${echo.port}`));
    await new Promise<void>((resolve) => first.session.close(() => resolve()));
  });
});

/** Sends bytes through an HTTP/2 tunnel, checks the echo, ends the stream and waits for it to close. */
async function pingAndEnd(h2: H2Tunnel): Promise<void> {
  assert.equal(h2.status, 200);
  h2.stream.write('ping');
  assert.equal((await readBytes(h2.stream, 4)).toString(), 'ping');
  h2.stream.end();
  if (!h2.stream.closed) await once(h2.stream, 'close');
}

test('a connection to a tcp endpoint fires the hooks in HOOK_ORDERS.tcp_endpoint', async () => {
  await expectOrder('tcp_endpoint', async () => {
    const [host, port] = oxy.address('raw').split(':');
    const socket = net.connect({ host, port: Number(port) });
    socket.write('ping');
    assert.equal((await readBytes(socket, 4)).toString(), 'ping');
    socket.end();
    await once(socket, 'close');
  });
});

test('a datagram session fires the hooks in HOOK_ORDERS.udp_session', async () => {
  await expectOrder('udp_session', async () => {
    const s = dgram.createSocket('udp4');
    s.send('ping', Number(oxy.address('dgram').split(':').at(-1)), '127.0.0.1');
    const [reply] = (await once(s, 'message')) as [Buffer];
    assert.equal(reply.toString(), 'ping');
    s.close();
  });
});

test('a CONNECT-UDP stream over HTTP/2 fires the hooks in HOOK_ORDERS.connect_udp_http2', async () => {
  await expectOrder('connect_udp_http2', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}` });
    const tunnel = await client.connectUdp('localhost', udpEcho.address().port);
    assert.equal(tunnel.status, 200);
    tunnel.send(Buffer.from('ping'));
    for await (const reply of tunnel) {
      assert.equal(Buffer.from(reply).toString(), 'ping');
      break;
    }
    await client.close();
  });
});

test('an IP tunnel with one UDP flow fires the hooks in HOOK_ORDERS.ip_tunnel_udp', async () => {
  await expectOrder('ip_tunnel_udp', async () => {
    const s = await seqpacket.connect(ipSocket);
    s.send(Buffer.from('context'));
    s.send(buildUdpPacket('10.7.0.2', 40000, '127.0.0.1', udpEcho.address().port, Buffer.from('ping')));
    const [replies] = (await once(s, 'messages')) as [Buffer[]];
    assert.equal(udpPayload(parseIp(replies[0] as Buffer)).toString(), 'ping');
    s.close();
  });
});

test('a CONNECT-IP stream over HTTP/2 fires the hooks in HOOK_ORDERS.connect_ip_http2', async () => {
  await expectOrder('connect_ip_http2', async () => {
    const client = createMasqueClient({ proxy: `http://${oxy.address()}` });
    const tunnel = await client.connectIp();
    assert.equal(tunnel.status, 200);
    if (tunnel.assigned.length === 0) await once(tunnel, 'addressAssign');
    const me = tunnel.assigned.find((a) => a.version === 4)!.address;
    tunnel.send(
      buildIp({
        src: me,
        dst: '100.64.0.1',
        protocol: IP_PROTO.ICMP,
        payload: icmpMessage(8, 0, 1, Buffer.from('hi')),
      }),
    );
    for await (const reply of tunnel) {
      assert.equal(Buffer.from(reply).subarray(28).toString(), 'hi');
      break;
    }
    await client.close();
  });
});

test('every kind of traffic in HOOK_ORDERS has a recorded test here', () => {
  assert.deepEqual(Object.keys(HOOK_ORDERS).sort(), [
    'connect_blocked',
    'connect_denied',
    'connect_http1',
    'connect_http2',
    'connect_http2_two_streams',
    'connect_ip_http2',
    'connect_udp_http2',
    'forward_http1',
    'forward_http1_body',
    'forward_http1_keepalive',
    'ingress_blocked',
    'ip_tunnel_udp',
    'tcp_endpoint',
    'udp_session',
    'upgrade_http1',
  ]);
});
