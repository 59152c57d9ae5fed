/**
 * `udp` endpoints: datagram sessions by client address through the datagram runner: DNS with
 * dig (Debian's bind9-dnsutils, when installed) and with a client written here, 10,000
 * datagrams with none lost, idle expiry with a `udp_session` audit record, refusals by the
 * blocklist, the datagram hook rewriting and dropping, the session bound, and a target where
 * nothing listens (the ICMP errors counted, the session going on).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { captureTelemetry } from 'foundations/telemetry/testing';
import type { AuditRecord } from '../src/audit.ts';
import { DatagramVerdict } from '../src/hooks/datagram.ts';
import { EgressDecision } from '../src/hooks/egress.ts';
import { IngressDecision } from '../src/hooks/ingress.ts';
import { DNS_TYPE, decodeDnsMessage, encodeDnsMessage } from '../src/protocols/dns/codec.ts';
import { type AppUnderTest, hooksApp, startApp, startDnsServer, waitUntil } from '../src/testing/index.ts';
import { startUdpEcho } from './fixtures/udp-echo.ts';

const execFileAsync = promisify(execFile);
const dns = await startDnsServer({ records: { 'example.test': { A: ['192.0.2.7'] } } });
const echo = await startUdpEcho();
const echoPort = echo.port;

const opened: AppUnderTest[] = [];
after(async () => {
  await Promise.all(opened.map((a) => a.stop()));
  echo.close();
  await dns.close();
});

async function start(hooks: Parameters<typeof hooksApp>[0], udp: Record<string, unknown>, extra = {}) {
  const app = await startApp(hooksApp(hooks), {
    settings: { endpoints: { main: {}, dns: { protocol: 'udp', addr: '127.0.0.1:0', udp } }, ...extra },
  });
  opened.push(app);
  return app;
}

function portOf(app: AppUnderTest): number {
  return Number(app.address('dns').split(':').at(-1));
}

/** Sends `payload` from a new socket and resolves with the first answer (or rejects after `ms`). */
async function ask(port: number, payload: Buffer, ms = 2000): Promise<Buffer> {
  const s = dgram.createSocket('udp4');
  try {
    s.send(payload, port, '127.0.0.1');
    const timer = setTimeout(() => s.emit('error', new Error('no answer')), ms);
    const [msg] = (await once(s, 'message')) as [Buffer];
    clearTimeout(timer);
    return msg;
  } finally {
    s.close();
  }
}

function query(id: number, name: string): Buffer {
  return Buffer.from(
    encodeDnsMessage({
      header: { id, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, rcode: 0 },
      questions: [{ name, type: DNS_TYPE.A, class: 1 }],
      answers: [],
      authorities: [],
      additionals: [],
    }),
  );
}

/** Polls `read` (a metric, missing as 0) every 20 ms until it differs from `before`; fails after 3 s. */
async function untilChanged(
  read: () => Promise<number | undefined>,
  before: number,
  what: string,
): Promise<void> {
  for (let t = 0; ((await read()) ?? 0) === before; t++) {
    assert.ok(t < 150, what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function recordFor(app: AppUnderTest, match: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  await waitUntil(() => app.auditRecords().some(match), 'the audit record');
  return app.auditRecords().find(match) as AuditRecord;
}

test('a DNS query through a udp endpoint reaches the server and its answer comes back', async () => {
  const app = await start({}, { target: dns.address });
  const answer = decodeDnsMessage(await ask(portOf(app), query(4242, 'example.test')));
  assert.equal(answer.header.id, 4242);
  assert.deepEqual(
    answer.answers.map((a) => a.address),
    ['192.0.2.7'],
  );
});

test('dig through the endpoint', {
  skip: spawnSync('dig', ['-v']).error ? 'dig is not installed (bind9-dnsutils)' : false,
}, async () => {
  const app = await start({}, { target: dns.address });
  // Asynchronously: the proxy and the DNS server run in this process.
  const r = await execFileAsync(
    'dig',
    ['+short', '+tries=1', '+time=2', '-p', String(portOf(app)), '@127.0.0.1', 'example.test', 'A'],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(r.stdout.trim(), '192.0.2.7', r.stderr);
});

test('10,000 datagrams through one session: none lost, counted in the audit record at idle expiry', async () => {
  // An idle timeout long enough that a loaded machine's pause does not end the session mid-run.
  const app = await start({}, { target: `127.0.0.1:${echoPort}`, idle_timeout: '1500ms' });
  const port = portOf(app);
  const client = dgram.createSocket('udp4');
  const total = 10_000;
  const window = 64;
  let sent = 0;
  let received = 0;
  const seen = new Uint8Array(total);
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`received ${received} of ${total}`)), 20_000);
    client.on('message', (msg) => {
      const n = msg.readUInt32BE(0);
      if (seen[n] === 0) {
        seen[n] = 1;
        received++;
      }
      if (received === total) {
        clearTimeout(timer);
        resolve();
      } else if (sent < total) send();
    });
  });
  const send = () => {
    // A buffer per datagram: dgram reads it when the send happens, not when it is queued.
    const payload = Buffer.alloc(100);
    payload.writeUInt32BE(sent++, 0);
    client.send(payload, port, '127.0.0.1');
  };
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  for (let i = 0; i < window; i++) send();
  await done;
  const local = `127.0.0.1:${client.address().port}`;
  client.close();
  const rec = await recordFor(app, (r) => r.kind === 'udp_session' && r.client === local);
  assert.equal(rec.close_reason, 'idle_timeout');
  assert.equal(rec.datagrams_up, total);
  assert.equal(rec.datagrams_down, total);
  assert.equal(rec.bytes_up, total * 100);
  assert.equal(rec.upstream, `127.0.0.1:${echoPort}`);
  assert.deepEqual(rec.decisions, ['egress:direct']);
});

test('bursts of mixed sizes from one client go up whole and in order (runs in one system call)', async () => {
  const app = await start({}, { target: `127.0.0.1:${echoPort}`, idle_timeout: '300ms' });
  const port = portOf(app);
  const client = dgram.createSocket('udp4');
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  const got: string[] = [];
  client.on('message', (m: Buffer) => got.push(m.toString('hex')));
  const sent: string[] = [];
  const sizes = [64, 64, 64, 20, 1200, 1200, 0, 64, 1500, 64];
  for (let burst = 0; burst < 10; burst++) {
    for (let i = 0; i < 40; i++) {
      const seq = burst * 40 + i;
      const body = Buffer.alloc(sizes[seq % sizes.length] as number, seq & 0xff);
      if (body.length >= 2) body.writeUInt16BE(seq, 0);
      sent.push(body.toString('hex'));
      client.send(body, port, '127.0.0.1');
    }
    await waitUntil(() => got.length === sent.length, `the echoes of burst ${burst}`);
  }
  const local = `127.0.0.1:${client.address().port}`;
  client.close();
  assert.deepEqual(got, sent);
  const rec = await recordFor(app, (r) => r.kind === 'udp_session' && r.client === local);
  assert.equal(rec.datagrams_up, sent.length);
  assert.equal(
    rec.bytes_up,
    sent.reduce((n, h) => n + h.length / 2, 0),
  );
});

test('a blocked destination refuses the session: nothing is sent, one record per session, counted once', async () => {
  const tele = captureTelemetry({ verbosity: 'ERROR' });
  try {
    const blocked = async () =>
      (await tele.metricValue('egress_connect_failed_total', { code: 'OXY_ERR_EGRESS_BLOCKED' })) ?? 0;
    const before = await blocked();
    const app = await start(
      {},
      { target: `127.0.0.1:${echoPort}`, idle_timeout: '200ms' },
      { egress: { blocked_cidrs: ['127.0.0.0/8'] } },
    );
    await assert.rejects(ask(portOf(app), Buffer.from('x'), 300), /no answer/);
    const rec = await recordFor(app, (r) => r.kind === 'udp_session');
    assert.equal(rec.status, 403);
    assert.equal(rec.close_reason, 'OXY_ERR_EGRESS_BLOCKED');
    assert.match(rec.block_reason ?? '', /blocked/, 'the blocklist says why, as for tcp');
    assert.equal(rec.datagrams_up, 0);
    assert.equal((await blocked()) - before, 1, 'one refused session, one count');
  } finally {
    tele.stop();
  }
});

test("an ingress hook's block: the session's record carries the hook's reason", async () => {
  const app = await start(
    { ingress: { handleConnection: () => IngressDecision.block('no udp from here') } },
    { target: `127.0.0.1:${echoPort}`, idle_timeout: '200ms' },
  );
  await assert.rejects(ask(portOf(app), Buffer.from('x'), 300), /no answer/);
  const rec = await recordFor(app, (r) => r.kind === 'udp_session');
  assert.equal(rec.close_reason, 'blocked');
  assert.equal(rec.block_reason, 'no udp from here');
  assert.deepEqual(rec.decisions, ['ingress:block']);
});

test('the datagram hook rewrites and drops; the egress hook picks the target', async () => {
  const app = await start(
    {
      egress: { handleConnection: () => EgressDecision.direct({ host: '127.0.0.1', port: echoPort }) },
      datagram: {
        handleDatagram: (data, direction) => {
          const text = Buffer.from(data).toString();
          if (text === 'drop me') return DatagramVerdict.drop('test');
          return direction === 'down' ? DatagramVerdict.rewrite(Buffer.from(`${text}!`)) : undefined;
        },
      },
    },
    { target: null },
  );
  assert.equal((await ask(portOf(app), Buffer.from('hello'))).toString(), 'hello!');
  await assert.rejects(ask(portOf(app), Buffer.from('drop me'), 300), /no answer/);
});

test('beyond max_sessions, datagrams of new clients are dropped, with one warning; existing sessions go on', async () => {
  const app = await start({}, { target: `127.0.0.1:${echoPort}`, max_sessions: 1 });
  using tele = captureTelemetry({ verbosity: 'WARN' });
  const first = dgram.createSocket('udp4');
  first.bind(0, '127.0.0.1');
  await once(first, 'listening');
  first.send('one', portOf(app), '127.0.0.1');
  assert.equal(((await once(first, 'message')) as [Buffer])[0].toString(), 'one');
  await assert.rejects(ask(portOf(app), Buffer.from('two'), 300), /no answer/);
  await assert.rejects(ask(portOf(app), Buffer.from('three'), 300), /no answer/);
  first.send('again', portOf(app), '127.0.0.1');
  assert.equal(((await once(first, 'message')) as [Buffer])[0].toString(), 'again');
  first.close();
  const warned = tele.logs.filter((r) => r.msg === 'udp endpoint at max_sessions: new clients are dropped');
  assert.equal(warned.length, 1, 'one line for the episode, not one per datagram');
  assert.equal(warned[0]?.fields.max_sessions, 1);
});

test('a target where nothing listens: the ICMP errors are counted, and the session goes on', async () => {
  const tele = captureTelemetry({ verbosity: 'ERROR' });
  try {
    const closed = dgram.createSocket('udp4');
    closed.bind(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = closed.address().port;
    closed.close(); // nothing listens there now: the kernel answers port unreachable
    const app = await start({}, { target: `127.0.0.1:${port}` });
    const before = (await tele.metricValue('udp_upstream_errors_total', { code: 'ECONNREFUSED' })) ?? 0;
    const client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    for (let i = 0; i < 3; i++) client.send(`probe ${i}`, portOf(app), '127.0.0.1');
    await untilChanged(
      () => tele.metricValue('udp_upstream_errors_total', { code: 'ECONNREFUSED' }),
      before,
      'an ECONNREFUSED counted within 3 s',
    );
    // The session is still there: a server that starts listening now gets the next datagram.
    const late = dgram.createSocket('udp4');
    late.bind(port, '127.0.0.1');
    await once(late, 'listening');
    client.send('after', portOf(app), '127.0.0.1');
    const [msg] = (await once(late, 'message')) as [Buffer];
    assert.equal(msg.toString(), 'after');
    late.close();
    client.close();
  } finally {
    tele.stop();
  }
});

test('EgressHook.udpConnectOverride: the app makes the session socket; its replies come back', async () => {
  // A second echo that marks its answers, so the test sees which socket carried the datagram.
  const other = dgram.createSocket('udp4');
  other.on('message', (msg, from) =>
    other.send(Buffer.concat([Buffer.from('app:'), msg]), from.port, from.address),
  );
  other.bind(0, '127.0.0.1');
  await once(other, 'listening');
  const asked: string[][] = [];
  const made: dgram.Socket[] = [];
  try {
    const app = await start(
      {
        egress: {
          udpConnectOverride: async (addrs: readonly { host: string; port: number }[]) => {
            asked.push(addrs.map((a) => `${a.host}:${a.port}`));
            const s = dgram.createSocket('udp4');
            made.push(s);
            s.connect(other.address().port, '127.0.0.1');
            await once(s, 'connect');
            return s;
          },
        },
      },
      { target: `127.0.0.1:${echoPort}`, idle_timeout: '200ms' },
    );
    assert.equal((await ask(portOf(app), Buffer.from('ping'))).toString(), 'app:ping');
    assert.deepEqual(asked, [[`127.0.0.1:${echoPort}`]], 'the hook gets the checked addresses');
    const rec = await recordFor(app, (r) => r.kind === 'udp_session');
    assert.equal(rec.upstream, `127.0.0.1:${other.address().port}`);
    assert.equal(rec.datagrams_up, 1);
    assert.equal(rec.datagrams_down, 1);
    // The session ended (idle): Oxy closed the app's socket.
    assert.throws(() => made[0]?.address(), /ERR_SOCKET_DGRAM_NOT_RUNNING|Not running/);
  } finally {
    other.close();
  }
});

test('EgressHook.udpConnectOverride: undefined keeps the built-in socket; a wrong answer refuses the session', async () => {
  const passing = await start(
    { egress: { udpConnectOverride: () => undefined } },
    { target: `127.0.0.1:${echoPort}` },
  );
  assert.equal((await ask(portOf(passing), Buffer.from('plain'))).toString(), 'plain');
  const wrong = await start(
    { egress: { udpConnectOverride: () => 42 as never } },
    { target: `127.0.0.1:${echoPort}`, idle_timeout: '200ms' },
  );
  await assert.rejects(ask(portOf(wrong), Buffer.from('x'), 300), /no answer/);
  const rec = await recordFor(wrong, (r) => r.kind === 'udp_session');
  assert.equal(rec.datagrams_up, 0);
  assert.match(String(rec.close_reason), /OXY_ERR_(HOOK_FAILED|INVALID_DECISION)/);
});

test('EgressHook.udpConnectOverride: a socket the app closes mid-session fails that session only', async () => {
  const tele = captureTelemetry({ verbosity: 'ERROR' });
  const made: dgram.Socket[] = [];
  try {
    const app = await start(
      {
        egress: {
          udpConnectOverride: async () => {
            const s = dgram.createSocket('udp4');
            made.push(s);
            s.connect(echoPort, '127.0.0.1');
            await once(s, 'connect');
            return s;
          },
        },
      },
      { target: `127.0.0.1:${echoPort}` },
    );
    const client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    client.send('one', portOf(app), '127.0.0.1');
    assert.equal(((await once(client, 'message')) as [Buffer])[0].toString(), 'one');
    made[0]?.close(); // the app's own doing
    const errors = async () => (await tele.metricValue('udp_upstream_errors_total')) ?? 0;
    const before = await errors();
    client.send('two', portOf(app), '127.0.0.1');
    await untilChanged(errors, before, 'the failed send counted within 3 s');
    client.close();
    // The endpoint goes on: a new client's session gets a socket of its own.
    assert.equal((await ask(portOf(app), Buffer.from('three'))).toString(), 'three');
  } finally {
    tele.stop();
  }
});
