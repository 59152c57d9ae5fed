import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { test } from 'node:test';
import { defaultSettings } from 'foundations/settings';
import { defineApp } from '../../app.ts';
import { NO_EXT } from '../../context/ext.ts';
import { EndpointState } from '../../context/state.ts';
import { isOxyError } from '../../errors.ts';
import { NO_HOOKS } from '../../hooks/run.ts';
import { appSettings } from '../../proxy.ts';
import { Runtime } from '../../runtime.ts';
import { acceptConnection } from '../ingress.ts';
import { createHttpOnRamp } from './endpoint.ts';
import { http2ServerOptions } from './server.ts';
import { Http2Settings } from './settings.ts';

const defaults = defaultSettings(Http2Settings);

test('the default settings map to HTTP/2 SETTINGS with extended CONNECT on and push off', () => {
  const o = http2ServerOptions(defaults, 'endpoints.main.http2');
  assert.deepEqual(o.settings, {
    enablePush: false,
    enableConnectProtocol: true,
    maxConcurrentStreams: 1000,
    initialWindowSize: 1024 * 1024,
    maxFrameSize: 64 * 1024,
    maxHeaderListSize: 64 * 1024,
  });
  assert.equal(o.maxSessionMemory, 64);
});

test('values HTTP/2 cannot carry are start-up errors naming the key', () => {
  const cases: [Partial<Http2Settings>, RegExp][] = [
    [{ max_frame_size: 1024 }, /^endpoints\.main\.http2\.max_frame_size: must be between 16384 and 16777215/],
    [{ max_frame_size: 2 ** 24 }, /^endpoints\.main\.http2\.max_frame_size/],
    [{ stream_window_size: 2 ** 31 }, /^endpoints\.main\.http2\.stream_window_size/],
    [{ connection_window_size: 1000 }, /^endpoints\.main\.http2\.connection_window_size/],
    [{ max_header_list_size: 10 }, /^endpoints\.main\.http2\.max_header_list_size/],
  ];
  for (const [over, message] of cases) {
    assert.throws(
      () => http2ServerOptions({ ...defaults, ...over }, 'endpoints.main.http2'),
      (e: unknown) => isOxyError(e) && message.test(e.message),
      JSON.stringify(over),
    );
  }
});

test('extended CONNECT: 501 by default, served by a registered handler, 500 if it throws', async () => {
  const app = defineApp({ name: 't', version: '0', description: 'd', start: () => ({}) });
  const settings = appSettings(app, [
    {
      source: 'test',
      value: { telemetry: { server: { enabled: false } }, endpoints: { main: { addr: '127.0.0.1:0' } } },
    },
  ]);
  const rt = new Runtime(NO_HOOKS, NO_EXT, settings);
  const endpoint = new EndpointState('main', settings.endpoints.main as never, NO_EXT);
  const onramp = createHttpOnRamp(rt, endpoint);
  onramp.http2?.handleExtendedConnect('websocket', (stream, head) => {
    stream.respond({ ':status': 200, 'x-path': head.path });
    stream.pipe(stream);
  });
  onramp.http2?.handleExtendedConnect('broken', () => {
    throw new Error('boom');
  });
  const server = net.createServer({ allowHalfOpen: true }, (socket) =>
    acceptConnection(rt, endpoint, socket, onramp),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  try {
    await once(session, 'remoteSettings');
    const open = async (protocol: string) => {
      const st = session.request(
        {
          ':method': 'CONNECT',
          ':protocol': protocol,
          ':scheme': 'http',
          ':authority': `127.0.0.1:${port}`,
          ':path': '/chat',
        },
        { endStream: false },
      );
      st.on('error', () => {});
      const [h] = (await once(st, 'response')) as [http2.IncomingHttpHeaders];
      return { st, h };
    };
    const ws = await open('websocket');
    assert.equal(ws.h[':status'], 200);
    assert.equal(ws.h['x-path'], '/chat');
    ws.st.write('echo me');
    const [data] = (await once(ws.st, 'data')) as [Buffer];
    assert.equal(data.toString(), 'echo me');
    ws.st.close();
    // connect-udp is MASQUE's (served by the endpoint); a protocol nobody registered is 501.
    assert.equal((await open('x-unregistered')).h[':status'], 501);
    assert.equal((await open('connect-udp')).h[':status'], 400);
    assert.match(String((await open('connect-udp')).h['proxy-status']), /error=http_request_error/);
    assert.equal((await open('broken')).h[':status'], 500);
  } finally {
    session.destroy();
    onramp.close();
    server.close();
  }
});
