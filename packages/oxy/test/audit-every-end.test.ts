/**
 * Every request and tunnel that ends, however it ends, writes exactly one audit record and
 * releases its upstream connection (issue 19): completion, client reset, client hang-up,
 * timeouts, upstream reset, upstream refusal; on HTTP/1.1 (both paths), HTTP/2, and CONNECT
 * over both. "Exactly one": the record count grows by one and stays there a moment longer.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import type net from 'node:net';
import { after, describe, test } from 'node:test';
import type { AuditRecord } from '../src/audit.ts';
import {
  connectTunnel,
  connectTunnelH2,
  hooksApp,
  rawConnect,
  startApp,
  startTcpEcho,
  startTcpServer,
  type TcpPeer,
  unusedPort,
  waitUntil,
} from '../src/testing/index.ts';
import { onHead } from './fixtures/raw-http.ts';

/** An upstream whose behaviour is chosen by the request path. */
const up: TcpPeer = await startTcpServer((s) =>
  onHead(s, (head) => {
    s.resume();
    const path = head.split(' ')[1] ?? '';
    if (path.startsWith('/ok')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    else if (path.startsWith('/reset')) s.resetAndDestroy();
    else if (path.startsWith('/partial')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst');
    // '/hang': nothing
  }),
);
const echo = await startTcpEcho();
// Resets each tunnel once it has received a byte.
const resetter = await startTcpServer((s) => s.once('data', () => s.resetAndDestroy()));
const oxy = await startApp(hooksApp(), {
  settings: { endpoints: { main: { body_read_timeout: '300ms', tunnel_idle_timeout: '300ms' } } },
});
after(async () => {
  await Promise.all([up.close(), echo.close(), resetter.close()]);
  await oxy.stop();
});
const refusedPort = await unusedPort();

/** Runs `action`, then asserts exactly one new record, matching `reason`, and no upstream held. */
async function oneRecord(
  what: string,
  reason: RegExp,
  action: () => Promise<void> | void,
): Promise<AuditRecord> {
  const before = oxy.auditRecords().length;
  await action();
  const records = await oxy.waitForAudit(before + 1);
  await new Promise((r) => setTimeout(r, 150));
  const mine = oxy.auditRecords().slice(before);
  assert.equal(mine.length, 1, `${what}: ${JSON.stringify(mine)}`);
  assert.match(records[before]?.close_reason ?? '', reason, what);
  await waitUntil(() => up.open() === 0 && resetter.open() === 0, `${what}: upstream connections released`);
  return records[before] as AuditRecord;
}

function raw(bytes: string): net.Socket {
  const c = rawConnect(oxy.address(), bytes);
  c.on('error', () => {});
  after(() => c.destroy());
  return c;
}

const get = (path: string): string =>
  `GET http://${up.authority}${path} HTTP/1.1\r\nHost: ${up.authority}\r\n\r\n`;
const post = (path: string, body = 'xy', length = body.length): string =>
  `POST http://${up.authority}${path} HTTP/1.1\r\nHost: ${up.authority}\r\nContent-Length: ${length}\r\n\r\n${body}`;

describe('HTTP/1.1', () => {
  for (const [path, name, req] of [
    ['lean', 'GET', get],
    ['node:http', 'POST', (p: string) => post(p)],
  ] as const) {
    test(`${path} (${name}): done, client reset, upstream reset, upstream cut mid-body, refused`, async () => {
      await oneRecord('done', /^done$/, async () => {
        const c = raw(req('/ok'));
        await once(c, 'data');
      });
      await oneRecord('client reset while waiting', /^client_closed$/, async () => {
        const c = raw(req('/hang'));
        await waitUntil(() => up.open() > 0, 'the request upstream');
        c.resetAndDestroy();
      });
      await oneRecord('client reset mid-body', /^client_closed$/, async () => {
        const c = raw(req('/partial'));
        await once(c, 'data');
        c.resetAndDestroy();
      });
      await oneRecord('upstream reset', /^OXY_ERR_UPSTREAM_FAILED$/, async () => {
        const c = raw(req('/reset'));
        await once(c, 'data');
      });
      const r = await oneRecord('refused', /^OXY_ERR_CONNECT_REFUSED$/, async () => {
        const c = raw(req('/ok').replaceAll(up.authority, `127.0.0.1:${refusedPort}`));
        await once(c, 'data');
      });
      assert.equal(r.status, 502);
    });
  }

  test('node:http: a body that stops arriving', async () => {
    await oneRecord('body timeout', /^OXY_ERR_BODY_TIMEOUT$/, async () => {
      const c = raw(post('/hang', 'x', 10));
      await once(c, 'data');
    });
  });
});

describe('HTTP/2', () => {
  function session(): http2.ClientHttp2Session {
    const s = http2.connect(`http://${oxy.address()}`);
    s.on('error', () => {});
    after(() => s.destroy());
    return s;
  }
  function request(s: http2.ClientHttp2Session, path: string, method = 'GET'): http2.ClientHttp2Stream {
    const r = s.request(
      { ':method': method, ':authority': up.authority, ':path': path },
      { endStream: method === 'GET' },
    );
    r.on('error', () => {});
    r.resume();
    return r;
  }

  test('done, stream reset, session hang-up, upstream reset, body timeout', async () => {
    const s = session();
    await oneRecord('done', /^done$/, async () => {
      await new Promise((r) => request(s, '/ok').on('close', r));
    });
    await oneRecord('stream reset while waiting', /^client_closed$/, async () => {
      const r = request(s, '/hang');
      await waitUntil(() => up.open() > 0, 'the request upstream');
      r.close(http2.constants.NGHTTP2_CANCEL);
    });
    await oneRecord('stream reset mid-body', /^client_closed$/, async () => {
      const r = request(s, '/partial');
      await once(r, 'response');
      r.close(http2.constants.NGHTTP2_CANCEL);
    });
    await oneRecord('upstream reset', /^OXY_ERR_UPSTREAM_FAILED$/, async () => {
      await new Promise((r) => request(s, '/reset').on('close', r));
    });
    await oneRecord('body timeout', /^OXY_ERR_BODY_TIMEOUT$/, async () => {
      const r = request(s, '/hang', 'POST');
      r.write('x');
      await new Promise((resolve) => r.on('close', resolve));
    });
    await oneRecord('session hang-up', /^client_closed$/, async () => {
      const other = session();
      request(other, '/hang');
      await waitUntil(() => up.open() > 0, 'the request upstream');
      other.destroy();
    });
  });
});

describe('CONNECT', () => {
  test('HTTP/1.1: done, client reset, upstream reset, idle timeout, refused', async () => {
    await oneRecord('done', /^done$/, async () => {
      const t = await connectTunnel(oxy.address(), echo.authority);
      t.socket.resume();
      t.socket.end('x');
      await once(t.socket, 'close');
    });
    await oneRecord('client reset', /^client_(reset|error)$/, async () => {
      const t = await connectTunnel(oxy.address(), echo.authority);
      t.socket.on('error', () => {});
      (t.socket as net.Socket).resetAndDestroy();
    });
    await oneRecord('upstream reset', /^upstream_(reset|error)$/, async () => {
      const t = await connectTunnel(oxy.address(), resetter.authority);
      t.socket.on('error', () => {});
      t.socket.resume();
      t.socket.write('x');
      await once(t.socket, 'close');
    });
    await oneRecord('idle timeout', /^idle_timeout$/, async () => {
      const t = await connectTunnel(oxy.address(), echo.authority);
      t.socket.on('error', () => {});
      t.socket.resume();
      await once(t.socket, 'close');
    });
    await oneRecord('refused', /^OXY_ERR_CONNECT_REFUSED$/, async () => {
      const t = await connectTunnel(oxy.address(), `127.0.0.1:${refusedPort}`);
      assert.equal(t.status, 502);
      t.socket.destroy();
    });
  });

  test('HTTP/2: done, stream reset, upstream reset, idle timeout', async () => {
    await oneRecord('done', /^done$/, async () => {
      const t = await connectTunnelH2(oxy.address(), echo.authority);
      t.stream.end('x');
      t.stream.resume();
      await new Promise((r) => t.stream.on('close', r));
      t.session.destroy();
    });
    await oneRecord('stream reset', /^client_(reset|error)$/, async () => {
      const t = await connectTunnelH2(oxy.address(), echo.authority);
      t.stream.on('error', () => {});
      t.stream.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((r) => t.stream.on('close', r));
      t.session.destroy();
    });
    await oneRecord('upstream reset', /^upstream_(reset|error)$/, async () => {
      const t = await connectTunnelH2(oxy.address(), resetter.authority);
      t.stream.on('error', () => {});
      t.stream.write('x');
      await new Promise((r) => t.stream.on('close', r));
      t.session.destroy();
    });
    await oneRecord('idle timeout', /^idle_timeout$/, async () => {
      const t = await connectTunnelH2(oxy.address(), echo.authority);
      t.stream.on('error', () => {});
      await new Promise((r) => t.stream.on('close', r));
      t.session.destroy();
    });
  });
});
