/**
 * `composeApps` keeps every app's PROXY protocol, datagram and TLS hooks (docs/apps.md: each app
 * runs unchanged). Before, the composed app had only the lifecycle, ingress, httpRequest,
 * httpBody, tunnel, egress and IP groups: composing an app with another (`requestLog()`, as
 * apps.md suggests) silently dropped its `ProxyProtocolHook` (a block stopped blocking), its
 * `DatagramHook` and its `TlsHook`.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { defineApp } from '../src/app.ts';
import { composeApps } from '../src/compose.ts';
import { eraseHooks } from '../src/context/ext.ts';
import { DatagramVerdict } from '../src/hooks/datagram.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { HOOK_METHODS, resolveHooks } from '../src/hooks/run.ts';
import { CertificateChoice, ClientIdentityDecision } from '../src/hooks/tls.ts';
import { requestLog } from '../src/request-log.ts';
import { type AppUnderTest, startApp } from '../src/testing/index.ts';
import { startUdpEcho } from './fixtures/udp-echo.ts';

const echo = await startUdpEcho();
const echoPort = echo.port;
const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((x) => x.stop()));
  echo.close();
});

const text = (d: Uint8Array) => Buffer.from(d).toString();

const a = defineApp({
  name: 'a',
  version: '1',
  description: 'a',
  start: () => ({
    proxyProtocol: {
      handleConnection: (header) =>
        header.addresses?.family === 'inet' && header.addresses.source.host === '192.0.2.66'
          ? IngressDecision.block('a: listed')
          : IngressDecision.allow(),
    },
    datagram: {
      handleDatagram: (data, direction) =>
        direction === 'up' && text(data) === 'ping'
          ? DatagramVerdict.rewrite(Buffer.from('pong'))
          : undefined,
    },
    tls: {
      selectCertificate: (sni) =>
        sni === 'a.example' ? CertificateChoice.use({ cert: 'A', key: 'A' }) : CertificateChoice.default(),
      handleClientIdentity: () => ClientIdentityDecision.accept(),
    },
  }),
});
const b = defineApp({
  name: 'b',
  version: '1',
  description: 'b',
  start: () => ({
    proxyProtocol: {
      handleConnection: (header) =>
        header.addresses?.family === 'inet' && header.addresses.source.host === '192.0.2.77'
          ? IngressDecision.block('b: listed')
          : IngressDecision.allow(),
    },
    datagram: {
      // b sees what a let through: a's rewrite, which it marks; it drops "drop".
      handleDatagram: (data, direction) => {
        if (direction !== 'up') return undefined;
        if (text(data) === 'drop') return DatagramVerdict.drop('b');
        return text(data) === 'pong' ? DatagramVerdict.rewrite(Buffer.from('pong!')) : undefined;
      },
    },
    tls: {
      selectCertificate: (sni) =>
        sni === 'b.example' ? CertificateChoice.use({ cert: 'B', key: 'B' }) : CertificateChoice.default(),
      handleClientIdentity: (identity) =>
        identity === null
          ? ClientIdentityDecision.refuse('b: a certificate is required')
          : ClientIdentityDecision.accept(),
    },
  }),
});

test('composed with requestLog(), an app keeps its ProxyProtocolHook: each app may block', async () => {
  const app = await startApp(composeApps(a, b, requestLog({ write: () => {} })), {
    settings: { endpoints: { main: { addr: '127.0.0.1:0', proxy_protocol: { enabled: true } } } },
  });
  opened.push(app);
  const port = Number(app.address('main').split(':').at(-1));
  const answer = async (source: string): Promise<string> => {
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    c.write(
      `PROXY TCP4 ${source} 127.0.0.1 4000 80\r\nGET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`,
    );
    let got = '';
    c.on('data', (d) => {
      got += d.toString();
    });
    await new Promise((r) => c.on('close', r));
    return got.split('\r\n')[0] ?? '';
  };
  assert.equal(await answer('192.0.2.66'), '', "a's block closes the connection");
  assert.equal(await answer('192.0.2.77'), '', "b's block closes the connection");
  assert.match(await answer('192.0.2.1'), /^HTTP\/1\.1 /, 'an allowed client gets an answer');
});

test('composed, the datagram hooks run in order: a rewrite is what the next app sees; a drop wins', async () => {
  const app = await startApp(composeApps(a, b, requestLog({ write: () => {} })), {
    settings: {
      endpoints: {
        main: {},
        u: { protocol: 'udp', addr: '127.0.0.1:0', udp: { target: `127.0.0.1:${echoPort}` } },
      },
      egress: { blocked_cidrs: [] },
    },
  });
  opened.push(app);
  const port = Number(app.address('u').split(':').at(-1));
  const client = dgram.createSocket('udp4');
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  const got: string[] = [];
  client.on('message', (m) => got.push(m.toString()));
  for (const m of ['ping', 'drop', 'plain']) {
    client.send(m, port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 100));
  }
  const deadline = Date.now() + 3000;
  while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  client.close();
  assert.deepEqual(got, ['pong!', 'plain']);
});

test('composed, the TLS hooks: the first certificate other than default, the first refusal', async () => {
  const hooks = await composeApps(a, b, requestLog({ write: () => {} })).definition.start(
    { app: {}, endpoints: {} } as never,
    undefined,
  );
  const tls = hooks.tls;
  assert.ok(
    tls?.selectCertificate !== undefined && tls.handleClientIdentity !== undefined,
    'the TLS hooks are kept',
  );
  const ctx = { ext: [] } as never;
  assert.deepEqual(
    await tls.selectCertificate('a.example', ctx),
    CertificateChoice.use({ cert: 'A', key: 'A' }),
  );
  assert.deepEqual(
    await tls.selectCertificate('b.example', ctx),
    CertificateChoice.use({ cert: 'B', key: 'B' }),
  );
  assert.deepEqual(await tls.selectCertificate('c.example', ctx), CertificateChoice.default());
  assert.deepEqual(
    await tls.handleClientIdentity(null, ctx),
    ClientIdentityDecision.refuse('b: a certificate is required'),
  );
});

test('every hook method of every group survives composition (none is dropped as these three were)', async () => {
  const empty = defineApp({ name: 'empty', version: '1', description: 'no hooks', start: () => ({}) });
  for (const [group, methods] of Object.entries(HOOK_METHODS)) {
    for (const method of methods) {
      const one = defineApp({
        name: 'one',
        version: '1',
        description: `only ${group}.${method}`,
        start: () => ({ [group]: { [method]: () => undefined } }) as never,
      });
      const alone = resolveHooks(eraseHooks(await one.definition.start({ endpoints: {} } as never, null)));
      const composed = composeApps(one, empty);
      const hooks = resolveHooks(
        eraseHooks(await composed.definition.start({ endpoints: {} } as never, null)),
      );
      const present = (r: typeof hooks) =>
        Object.entries(r)
          .filter(([, f]) => f !== null)
          .map(([k]) => k);
      assert.deepEqual(present(hooks), present(alone), `${group}.${method} after composeApps`);
    }
  }
});
