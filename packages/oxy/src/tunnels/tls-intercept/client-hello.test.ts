/**
 * The ClientHello reader against real ClientHellos recorded in this test from node:tls, curl
 * and openssl s_client (read whole, byte by byte and in random splits), against hand-built
 * edge cases (SNI characters, duplicate extensions, records split mid-message), malformed and
 * truncated input, and a time-bounded fuzz run of over 100,000 random and mutated inputs that
 * may only ever end in a result or a `ClientHelloError`.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import {
  ClientHelloError,
  ClientHelloParser,
  type ClientHelloProgress,
  parseClientHello,
  validServerName,
} from './client-hello.ts';

/** A listener that records the first bytes each client sends, until a ClientHello is read. */
const captured: Buffer[] = [];
const server = net.createServer((socket) => {
  const parser = new ClientHelloParser();
  const chunks: Buffer[] = [];
  socket.on('data', (b: Buffer) => {
    chunks.push(b);
    try {
      if (parser.push(b).kind === 'done') {
        captured.push(Buffer.concat(chunks));
        socket.destroy();
      }
    } catch {
      // Boundary: a test client that sends something else is simply dropped.
      socket.destroy();
    }
  });
  socket.on('error', () => {});
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const port = (server.address() as net.AddressInfo).port;
after(() => server.close());

async function record(run: () => Promise<unknown>): Promise<Buffer> {
  const before = captured.length;
  await run();
  for (let i = 0; i < 300 && captured.length === before; i++) await new Promise((r) => setTimeout(r, 10));
  const hello = captured[before];
  assert.ok(hello !== undefined, 'no ClientHello recorded');
  return hello;
}

const nodeClient = (options: tls.ConnectionOptions) => () =>
  new Promise<void>((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', ...options });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
const run = (cmd: string, args: string[]) => () =>
  new Promise<void>((resolve) => {
    execFile(cmd, args, { timeout: 5000 }, () => resolve());
  });
const sClient = (args: string[]) => () =>
  new Promise<void>((resolve) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.end();
    const timer = setTimeout(() => child.kill(), 5000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });

const vectors = {
  node: await record(nodeClient({ servername: 'Example.Test', ALPNProtocols: ['h2', 'http/1.1'] })),
  nodeNoSni: await record(nodeClient({})),
  curl: await record(
    run('curl', ['-sS', '--resolve', `curl.test:${port}:127.0.0.1`, `https://curl.test:${port}/`]),
  ),
  openssl: await record(sClient(['-servername', 'ossl.test', '-alpn', 'foo,bar'])),
  openssl12: await record(sClient(['-servername', 'old.test', '-tls1_2'])),
};

function done(p: ClientHelloProgress) {
  assert.equal(p.kind, 'done');
  return p.hello;
}

/** RFC 8448 §3 (Simple 1-RTT Handshake): the ClientHello handshake message, 196 bytes. */
const RFC8448_CLIENT_HELLO = Buffer.from(
  `01 00 00 c0 03 03 cb 34 ec b1 e7 81 63 ba 1c 38 c6 da cb 19 6a 6d ff a2 1a 8d 99 12 ec 18 a2 ef 62 83
   02 4d ec e7 00 00 06 13 01 13 03 13 02 01 00 00 91 00 00 00 0b 00 09 00 00 06 73 65 72 76 65 72 ff 01
   00 01 00 00 0a 00 14 00 12 00 1d 00 17 00 18 00 19 01 00 01 01 01 02 01 03 01 04 00 23 00 00 00 33 00
   26 00 24 00 1d 00 20 99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69
   1e 52 9a af 2c 00 2b 00 03 02 03 04 00 0d 00 20 00 1e 04 03 05 03 06 03 02 03 08 04 08 05 08 06 04 01
   05 01 06 01 02 01 04 02 05 02 06 02 02 02 00 2d 00 02 01 01 00 1c 00 02 40 01`.replace(/\s+/g, ''),
  'hex',
);

test('RFC 8448 §3 ClientHello in one TLS 1.0-versioned record', () => {
  assert.equal(RFC8448_CLIENT_HELLO.length, 196);
  const record = Buffer.concat([Buffer.from([22, 3, 1, 0, 196]), RFC8448_CLIENT_HELLO]);
  const h = done(parseClientHello(record));
  assert.equal(h.serverName, 'server');
  assert.deepEqual(h.supportedVersions, [0x0304]);
  assert.deepEqual(h.alpn, []);
  assert.equal(h.legacyVersion, 0x0303);
  assert.equal(h.length, 201);
});

describe('recorded ClientHellos', () => {
  test('node:tls with SNI and ALPN', () => {
    const h = done(parseClientHello(vectors.node));
    assert.equal(h.serverName, 'example.test');
    assert.deepEqual(h.alpn, ['h2', 'http/1.1']);
    assert.ok(h.supportedVersions.includes(0x0304));
    assert.equal(h.legacyVersion, 0x0303);
    assert.equal(h.length, vectors.node.length);
  });
  test('node:tls to an IP without servername: no SNI', () => {
    const h = done(parseClientHello(vectors.nodeNoSni));
    assert.equal(h.serverName, null);
    assert.deepEqual(h.alpn, []);
  });
  test('curl', () => {
    const h = done(parseClientHello(vectors.curl));
    assert.equal(h.serverName, 'curl.test');
    assert.ok(h.alpn.includes('http/1.1'), String(h.alpn));
  });
  test('openssl s_client with -alpn', () => {
    const h = done(parseClientHello(vectors.openssl));
    assert.equal(h.serverName, 'ossl.test');
    assert.deepEqual(h.alpn, ['foo', 'bar']);
  });
  test('openssl s_client -tls1_2: no TLS 1.3 offered', () => {
    const h = done(parseClientHello(vectors.openssl12));
    assert.equal(h.serverName, 'old.test');
    assert.ok(!h.supportedVersions.includes(0x0304));
  });
  test('every split of the reads gives the same answer', () => {
    const rfc = Buffer.concat([Buffer.from([22, 3, 1, 0, 196]), RFC8448_CLIENT_HELLO]);
    for (const [name, v] of Object.entries({ ...vectors, rfc })) {
      const whole = done(parseClientHello(v));
      const bytewise = new ClientHelloParser();
      let last: ClientHelloProgress = { kind: 'need_more' };
      for (let i = 0; i < v.length; i++) {
        assert.equal(last.kind, 'need_more', `${name}: done early at ${i}`);
        last = bytewise.push(v.subarray(i, i + 1));
      }
      assert.deepEqual(done(last), whole, name);
      for (let round = 0; round < 50; round++) {
        const p = new ClientHelloParser();
        let at = 0;
        let r: ClientHelloProgress = { kind: 'need_more' };
        while (at < v.length) {
          const n = 1 + Math.floor(Math.random() * 300);
          r = p.push(v.subarray(at, at + n));
          at += n;
        }
        assert.deepEqual(done(r), whole, name);
      }
    }
  });
  test('every proper prefix needs more, and ending there is truncated', () => {
    const v = vectors.curl;
    for (let i = 1; i < v.length; i++) {
      const p = new ClientHelloParser();
      assert.equal(p.push(v.subarray(0, i)).kind, 'need_more', `prefix ${i}`);
      assert.throws(
        () => p.end(),
        (e: unknown) => e instanceof ClientHelloError && e.reason === 'truncated',
      );
    }
  });
});

/** Builds a ClientHello with the given extensions ([type, data]) in records of `recordSize`. */
function build(extensions: [number, Buffer][], recordSize = 16_384): Buffer {
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const exts = Buffer.concat(extensions.map(([t, d]) => Buffer.concat([u16(t), u16(d.length), d])));
  const body = Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    u16(2),
    u16(0x1301),
    Buffer.from([1, 0]),
    u16(exts.length),
    exts,
  ]);
  const hs = Buffer.concat([
    Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]),
    body,
  ]);
  const records: Buffer[] = [];
  for (let at = 0; at < hs.length; at += recordSize) {
    const frag = hs.subarray(at, at + recordSize);
    records.push(Buffer.from([22, 3, 1, frag.length >> 8, frag.length & 0xff]), frag);
  }
  return Buffer.concat(records);
}
function sni(...names: (string | Buffer)[]): [number, Buffer] {
  const entries = names.map((n) => {
    const b = typeof n === 'string' ? Buffer.from(n, 'latin1') : n;
    return Buffer.concat([Buffer.from([0, b.length >> 8, b.length & 0xff]), b]);
  });
  const list = Buffer.concat(entries);
  return [0, Buffer.concat([Buffer.from([list.length >> 8, list.length & 0xff]), list])];
}
function alpn(...protocols: string[]): [number, Buffer] {
  const list = Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p)])));
  return [16, Buffer.concat([Buffer.from([list.length >> 8, list.length & 0xff]), list])];
}
const fails = (bytes: Buffer, reason: string) =>
  assert.throws(
    () => parseClientHello(bytes),
    (e: unknown) => e instanceof ClientHelloError && e.reason === reason,
    `expected ${reason}`,
  );

describe('edge cases and malformed input', () => {
  test('a ClientHello split over several records', () => {
    const h = done(parseClientHello(build([sni('split.example'), alpn('h2')], 7)));
    assert.equal(h.serverName, 'split.example');
    assert.deepEqual(h.alpn, ['h2']);
  });
  test('server names: accepted forms, refused characters and shapes', () => {
    for (const ok of ['a.b', 'xn--bcher-kva.example', '_dmarc.example.com', 'UPPER.example', 'a-b.c']) {
      assert.equal(done(parseClientHello(build([sni(ok)]))).serverName, ok.toLowerCase());
    }
    for (const bad of [
      'a b.example',
      'a/b.example',
      'ex\u00e9.com',
      'trailing.',
      '.lead',
      'a..b',
      '-a.example',
      'a-.example',
      '10.0.0.1',
      '1.2.3',
      'x'.repeat(64) + '.com',
      '',
    ]) {
      fails(build([sni(bad)]), 'bad_server_name');
    }
    fails(build([sni(Buffer.from('nul\0.example'))]), 'bad_server_name');
    fails(build([sni('a.example', 'b.example')]), 'bad_server_name');
    assert.equal(validServerName('Example.COM'), 'example.com');
    assert.equal(validServerName('::1'), null);
  });
  test('duplicate extensions are refused', () => {
    fails(build([alpn('h2'), alpn('h2')]), 'duplicate_extension');
  });
  test('empty ALPN lists and names are refused', () => {
    fails(build([[16, Buffer.from([0, 0])]]), 'bad_alpn');
    fails(build([[16, Buffer.from([0, 1, 0])]]), 'bad_alpn');
  });
  test('garbage, other records and other handshakes', () => {
    fails(Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'not_tls');
    fails(Buffer.from([0x16, 0x02, 0x00, 0, 5, 1, 0, 0, 1, 0]), 'not_tls');
    fails(Buffer.from([0x17, 3, 3, 0, 1, 0]), 'not_tls');
    fails(Buffer.from([22, 3, 1, 0x40, 0x01]), 'bad_record'); // 16385 bytes
    fails(Buffer.from([22, 3, 1, 0, 0]), 'bad_record');
    fails(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0]), 'not_client_hello');
    const v = Buffer.from(vectors.node);
    v[5 + 4 + 2 + 32] = 33; // session id longer than 32 bytes
    assert.throws(() => parseClientHello(v), ClientHelloError);
    fails(
      Buffer.concat([build([sni('a.example')]).subarray(0, -1), Buffer.from([0])]).fill(0xff, 9, 10),
      'malformed',
    );
  });
  test('bytes trailing the ClientHello in its record are refused', () => {
    const b = build([sni('a.example')]);
    const grown = Buffer.concat([b, Buffer.from([0])]);
    grown.writeUInt16BE(b.length - 5 + 1, 3);
    fails(grown, 'malformed');
  });
  test('the size bound', () => {
    assert.throws(
      () => parseClientHello(vectors.curl, 64),
      (e: unknown) => e instanceof ClientHelloError && e.reason === 'too_large',
    );
    const p = new ClientHelloParser(1024);
    assert.equal(p.push(Buffer.from([22, 3, 1, 0x3f, 0xff])).kind, 'need_more');
    assert.throws(
      () => p.push(Buffer.alloc(4096, 1)),
      (e: unknown) => e instanceof ClientHelloError,
    );
    assert.throws(() => p.push(Buffer.alloc(1)), ClientHelloError, 'a finished parser refuses more');
  });
});

describe('fuzz', () => {
  test('100,000+ random and mutated inputs end only in a result or a ClientHelloError', () => {
    const seeds = [...Object.values(vectors), build([sni('f.example'), alpn('h2', 'x')], 9)];
    const deadline = performance.now() + 25_000;
    let cases = 0;
    let results = 0;
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const heapBefore = process.memoryUsage().heapUsed;
    while (cases < 120_000 && performance.now() < deadline) {
      let input: Buffer;
      const mode = cases % 4;
      if (mode === 0) {
        input = Buffer.allocUnsafe(rnd(600));
        for (let i = 0; i < input.length; i++) input[i] = rnd(256);
        if (input.length > 3 && rnd(2) === 0) input.set([22, 3, rnd(5)], 0);
      } else {
        const seed = seeds[rnd(seeds.length)]!;
        input = Buffer.from(seed);
        const flips = 1 + rnd(mode === 1 ? 2 : 8);
        for (let i = 0; i < flips; i++) input[rnd(input.length)] = rnd(256);
        if (mode === 3) input = input.subarray(0, rnd(input.length + 1));
      }
      const parser = new ClientHelloParser(4096);
      try {
        let at = 0;
        let r: ClientHelloProgress = { kind: 'need_more' };
        while (at < input.length && r.kind === 'need_more') {
          const n = 1 + rnd(400);
          r = parser.push(input.subarray(at, at + n));
          at += n;
        }
        if (r.kind === 'done') {
          results++;
          assert.ok(
            r.hello.serverName === null || validServerName(r.hello.serverName) === r.hello.serverName,
          );
        } else parser.end();
      } catch (e) {
        if (!(e instanceof ClientHelloError)) throw e;
      }
      cases++;
    }
    assert.ok(cases >= 100_000, `only ${cases} cases within the time bound`);
    assert.ok(results > 0, 'some mutated inputs still parse');
    assert.ok(process.memoryUsage().heapUsed - heapBefore < 64 * 1024 * 1024, 'memory stays bounded');
  });
});
