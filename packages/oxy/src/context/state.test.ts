/**
 * The framework's context objects: the local address of an accepted connection comes from the
 * endpoint's settings when they fix it, and must equal what the kernel reports.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { defaultSettings } from 'foundations/settings';
import { EndpointSettings } from '../settings.ts';
import { NO_EXT } from './ext.ts';
import { EndpointState, fixedLocalAddr, IngressConnection } from './state.ts';

async function acceptOn(host: string, port: number): Promise<{ socket: net.Socket; close(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(port, host, r));
  const actual = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(actual, host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host);
  const socket = await accepted;
  return {
    socket,
    close: async () => {
      client.destroy();
      socket.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('IngressConnection.local', () => {
  it('is known from the settings only for one IP and a port', () => {
    assert.deepEqual(fixedLocalAddr({ kind: 'tcp', host: '127.0.0.1', port: 8080 }), {
      host: '127.0.0.1',
      port: 8080,
    });
    assert.deepEqual(fixedLocalAddr({ kind: 'tcp', host: '0:0:0:0:0:0:0:1', port: 80 }), {
      host: '::1',
      port: 80,
    });
    for (const addr of [
      { kind: 'tcp', host: '0.0.0.0', port: 80 },
      { kind: 'tcp', host: '::', port: 80 },
      { kind: 'tcp', host: '127.0.0.1', port: 0 },
      { kind: 'tcp', host: 'localhost', port: 80 },
      { kind: 'tcp', host: '::ffff:127.0.0.1', port: 80 },
      { kind: 'unix', path: '/tmp/x.sock' },
    ] as const) {
      assert.equal(fixedLocalAddr(addr), null, JSON.stringify(addr));
    }
  });

  for (const host of ['127.0.0.1', '::1', '0.0.0.0']) {
    it(`equals what the kernel reports, listening on ${host}`, async () => {
      const port = await freePort(host);
      const conn = await acceptOn(host, port);
      try {
        const settings = {
          ...defaultSettings(EndpointSettings),
          addr: { kind: 'tcp', host, port },
        } as EndpointSettings;
        const endpoint = new EndpointState('main', settings, NO_EXT);
        const c = new IngressConnection(endpoint, conn.socket, 'http/1.1', NO_EXT);
        assert.deepEqual({ ...c.local }, { host: conn.socket.localAddress, port: conn.socket.localPort });
        assert.deepEqual({ ...c.client }, { host: conn.socket.remoteAddress, port: conn.socket.remotePort });
      } finally {
        await conn.close();
      }
    });
  }
});
