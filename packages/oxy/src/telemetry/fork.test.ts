/**
 * The connection and request forks: the fields hook logs carry (computed lazily now, so this
 * pins what they must still be) and one trace per request.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { defaultSettings } from 'foundations/settings';
import { log, TelemetryContext } from 'foundations/telemetry';
import { captureTelemetry } from 'foundations/telemetry/testing';
import { NO_EXT } from '../context/ext.ts';
import { EndpointState, IngressConnection, RequestState } from '../context/state.ts';
import { EndpointSettings } from '../settings.ts';
import { forkConnection, forkRequest } from './fork.ts';

describe('telemetry forks', () => {
  let server: net.Server;
  const sockets: net.Socket[] = [];
  let accepted: Promise<net.Socket>;

  before(async () => {
    server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '::1', r));
    accepted = new Promise((r) => server.once('connection', r));
    const port = (server.address() as net.AddressInfo).port;
    sockets.push(net.connect(port, '::1'));
    sockets.push(await accepted);
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('give hook logs the connection and request fields, the client bracketed for IPv6', async () => {
    const tele = captureTelemetry({ verbosity: 'DEBUG' });
    after(() => tele.stop());
    const endpoint = new EndpointState(
      'main',
      {
        ...defaultSettings(EndpointSettings),
        addr: { kind: 'tcp', host: '::1', port: 0 },
      } as EndpointSettings,
      NO_EXT,
    );
    const conn = new IngressConnection(endpoint, sockets[1] as net.Socket, 'http/1.1', NO_EXT);
    const client = `[::1]:${conn.client.port}`;
    forkConnection(conn, () => log.info('accepted'));
    assert.ok(conn.telemetry !== null);
    const request = new RequestState(conn, 'connect', 'CONNECT', { host: 'example.com', port: 443 }, NO_EXT);
    await forkRequest(request, async () => {
      assert.equal(TelemetryContext.current(), request.telemetry);
      await new Promise((r) => setImmediate(r));
      log.debug('tunnel');
    });
    conn.telemetry?.apply(() => log.warn('closing'));
    const base = { conn_id: conn.id, endpoint: 'main', client };
    assert.deepEqual(
      tele.logs.map((r) => [r.msg, r.fields]),
      [
        ['accepted', base],
        ['tunnel', { ...base, request_id: request.id }],
        ['closing', base],
      ],
    );
    // A request trace of its own, distinct from the connection's.
    assert.notEqual(request.telemetry?.traceId, conn.telemetry?.traceId);
    tele.stop();
  });
});
