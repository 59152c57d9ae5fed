/**
 * readProxyHeader against real senders: haproxy (Debian's 2.6) in front of a small TCP server,
 * with `send-proxy` (v1), `send-proxy-v2`, and `send-proxy-v2` with
 * `proxy-v2-options ssl,unique-id,authority,crc32c,…` behind a TLS bind (certificates made with
 * openssl, a client certificate included so the CN and verify fields are filled); and curl's
 * `--haproxy-protocol` (v1) straight at the server. Every address asserted is one the client
 * socket itself reports, so nothing here is a hard-coded answer.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { parseSettings } from 'foundations/settings';
import {
  ProxyProtocolSettings,
  proxyReadOptions,
  readProxyHeader,
} from '../src/onramps/proxy-protocol/index.ts';
import {
  encodeProxyHeader,
  type ProxyHeader,
  proxyHeaderView,
} from '../src/protocols/proxy-protocol/index.ts';
import { freePort, has } from './fixtures/l4-peers.ts';

const execFileAsync = promisify(execFile);

/** Debian's stream module for nginx, when nginx and the module are installed. */
const NGINX_STREAM = ((): string | null => {
  const path = '/usr/lib/nginx/modules/ngx_stream_module.so';
  return has('nginx') && existsSync(path) ? path : null;
})();

const missing = ['haproxy', 'curl', 'openssl'].filter((c) => !has(c));
const skip =
  missing.length > 0 ? `needs ${missing.join(', ')} (Debian: apt-get install ${missing.join(' ')})` : false;

/** What the reader saw on one connection. */
interface Seen {
  readonly header: ProxyHeader;
  readonly peerPort: number;
  /** The bytes after the header: `rest`, then whatever else the peer sent. */
  data: string;
}

/** Source ports given out by {@link lowPort}: each test's header names a port no other test's does. */
const lowPorts = new Set<number>();

/**
 * A client port for a header we encode: below the ephemeral range (no real client has it) and
 * never one an earlier test used, since the reader's list keeps every connection (two tests
 * drawing the same port made the refused-header test find the other test's connection).
 */
function lowPort(): number {
  let port: number;
  do port = 1 + Math.floor(Math.random() * 1000);
  while (lowPorts.has(port));
  lowPorts.add(port);
  return port;
}

async function waitListening(port: number, deadline: number): Promise<void> {
  for (;;) {
    try {
      const c = net.connect(port, '127.0.0.1');
      await once(c, 'connect');
      c.destroy();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}

describe('PROXY protocol from real peers', { skip }, () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'oxy-pp-'));
  const seen: Seen[] = [];
  const server = net.createServer({ pauseOnConnect: true });
  const options = proxyReadOptions(parseSettings(ProxyProtocolSettings, []));
  let haproxy: ChildProcess | undefined;
  let nginx: ChildProcess | undefined;
  let haproxyLog = '';
  const ports = { v1: 0, v2: 0, tls: 0, server: 0, nginx: 0, accept: 0 };

  before(async () => {
    // The reader: the header, then one HTTP-ish answer naming the source it saw.
    server.on('connection', (socket) => {
      socket.on('error', () => {});
      readProxyHeader(socket, options).then(
        ({ header, rest }) => {
          const entry: Seen = { header, peerPort: socket.remotePort ?? 0, data: rest?.toString() ?? '' };
          seen.push(entry);
          socket.on('data', (d) => (entry.data += d));
          const body = JSON.stringify(proxyHeaderView(header));
          socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
          socket.resume();
        },
        () => {},
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    ports.server = (server.address() as net.AddressInfo).port;

    const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-x509'];
    ssl(['req', ...ec, '-keyout', 'srv.key', '-out', 'srv.pem', '-subj', '/CN=test.example']);
    ssl([
      'req',
      ...ec,
      '-keyout',
      'cli.key',
      '-out',
      'cli.pem',
      '-subj',
      '/CN=client.test',
      '-addext',
      'extendedKeyUsage=clientAuth',
    ]);
    writeFileSync(
      join(dir, 'srv-combined.pem'),
      readFileSync(join(dir, 'srv.pem'), 'utf8') + readFileSync(join(dir, 'srv.key'), 'utf8'),
    );

    ports.v1 = await freePort();
    ports.v2 = await freePort();
    ports.tls = await freePort();
    ports.accept = await freePort();
    const target = `127.0.0.1:${ports.server}`;
    const cfg = [
      'global',
      '  nbthread 1',
      'defaults',
      '  mode tcp',
      '  timeout connect 2s',
      '  timeout client 5s',
      '  timeout server 5s',
      'frontend v1',
      `  bind 127.0.0.1:${ports.v1}`,
      '  default_backend be_v1',
      'backend be_v1',
      `  server s ${target} send-proxy`,
      'frontend v2',
      `  bind 127.0.0.1:${ports.v2}`,
      '  default_backend be_v2',
      'backend be_v2',
      `  server s ${target} send-proxy-v2`,
      'frontend v2tls',
      `  bind 127.0.0.1:${ports.tls} ssl crt ${join(dir, 'srv-combined.pem')} ca-file ${join(dir, 'cli.pem')} verify optional alpn h2,http/1.1`,
      '  unique-id-format id-%ci-%cp',
      '  default_backend be_v2tls',
      'backend be_v2tls',
      `  server s ${target} send-proxy-v2 proxy-v2-options ssl,unique-id,authority,crc32c,cert-cn,ssl-cipher,cert-sig,cert-key`,
      // Our encoder as the sender: haproxy parses it (accept-proxy) and relays what it read.
      'frontend accept',
      `  bind 127.0.0.1:${ports.accept} accept-proxy`,
      '  default_backend be_relay',
      'backend be_relay',
      `  server s ${target} send-proxy-v2 proxy-v2-options authority,crc32c`,
      // Health checks: haproxy sends a LOCAL header on them.
      'backend be_checks',
      `  server s ${target} send-proxy-v2 proxy-v2-options crc32c check inter 200ms`,
      '',
    ].join('\n');
    const cfgPath = join(dir, 'haproxy.cfg');
    writeFileSync(cfgPath, cfg);
    execFileSync('haproxy', ['-c', '-f', cfgPath], { stdio: 'pipe' });
    haproxy = spawn('haproxy', ['-f', cfgPath, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout?.on('data', (d) => (haproxyLog += d));
    haproxy.stderr?.on('data', (d) => (haproxyLog += d));
    const deadline = Date.now() + 10_000;
    for (const p of [ports.v1, ports.v2, ports.tls, ports.accept]) await waitListening(p, deadline);

    if (NGINX_STREAM !== null) {
      ports.nginx = await freePort();
      const conf = [
        `load_module ${NGINX_STREAM};`,
        'daemon off;',
        'worker_processes 1;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${join(dir, 'nginx-error.log')};`,
        'events { worker_connections 64; }',
        'stream {',
        `  server { listen 127.0.0.1:${ports.nginx}; proxy_pass ${target}; proxy_protocol on; }`,
        '}',
        '',
      ].join('\n');
      writeFileSync(join(dir, 'nginx.conf'), conf);
      nginx = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'nginx-error.log')], {
        stdio: 'ignore',
      });
      await waitListening(ports.nginx, Date.now() + 10_000);
    }
  });

  after(async () => {
    for (const child of [haproxy, nginx]) {
      if (child !== undefined && child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    }
    server.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** Sends `text` on `socket` once connected and resolves with what came back, when closed. */
  async function exchange(socket: net.Socket, text: string | Uint8Array): Promise<string> {
    let got = '';
    socket.on('data', (d) => (got += d));
    socket.write(text);
    await once(socket, 'close');
    return got;
  }

  /** The connection the reader saw that matches `pick` (haproxy's own probes are there too). */
  async function seenWhere(pick: (s: Seen) => boolean): Promise<Seen> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const found = seen.find(pick);
      if (found !== undefined) return found;
      assert.ok(Date.now() < deadline, `no such connection reached the reader; haproxy said: ${haproxyLog}`);
      await sleep(10);
    }
  }
  const fromPort = (port: number | undefined) => (s: Seen) =>
    s.header.addresses?.family === 'inet' && s.header.addresses.source.port === port;

  for (const [name, key, version] of [
    ['send-proxy (v1)', 'v1', 1],
    ['send-proxy-v2', 'v2', 2],
  ] as const) {
    it(`haproxy ${name}: the header's source is the client's own address`, async () => {
      const client = net.connect(ports[key], '127.0.0.1');
      await once(client, 'connect');
      const local = { host: client.localAddress, port: client.localPort };
      const answer = await exchange(client, 'hello');
      const s = await seenWhere(fromPort(local.port));
      assert.equal(s.header.version, version);
      assert.equal(s.header.command, 'proxy');
      assert.equal(s.header.transport, 'stream');
      assert.deepEqual(s.header.addresses, {
        family: 'inet',
        source: local,
        destination: { host: '127.0.0.1', port: ports[key] },
      });
      assert.match(answer, new RegExp(`"source":"127\\.0\\.0\\.1:${local.port}"`));
    });
  }

  it('haproxy send-proxy-v2 behind TLS: SSL, UNIQUE_ID, AUTHORITY, ALPN and a CRC32C that checks', async () => {
    const client = tls.connect({
      host: '127.0.0.1',
      port: ports.tls,
      servername: 'test.example',
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: false,
      cert: readFileSync(join(dir, 'cli.pem')),
      key: readFileSync(join(dir, 'cli.key')),
    });
    await once(client, 'secureConnect');
    const local = { host: client.localAddress, port: client.localPort };
    const cipher = client.getCipher();
    const protocol = client.getProtocol();
    await exchange(client, 'hello');
    const s = await seenWhere(fromPort(local.port));
    assert.deepEqual(s.header.addresses?.source, local);
    const view = proxyHeaderView(s.header);
    const t = view.tlvs;
    assert.match(t.crc32c ?? '', /^0x[0-9a-f]{8}$/);
    assert.equal(t.alpn, 'http/1.1');
    assert.equal(t.authority, 'test.example');
    assert.equal(t.unique_id, `id-127.0.0.1-${local.port}`);
    assert.equal(t.ssl?.client_ssl, true);
    assert.equal(t.ssl?.client_cert_conn, true);
    assert.equal(t.ssl?.verified, true);
    assert.equal(t.ssl?.version, protocol);
    assert.ok(t.ssl?.cipher === cipher.name || t.ssl?.cipher === cipher.standardName, `${t.ssl?.cipher}`);
    assert.equal(t.ssl?.cn, 'client.test');
    assert.ok((t.ssl?.sig_alg ?? '').length > 0 && (t.ssl?.key_alg ?? '').length > 0, JSON.stringify(t.ssl));
  });

  it('haproxy health checks with send-proxy-v2: a LOCAL header, accepted, no addresses', async () => {
    const s = await seenWhere((x) => x.header.command === 'local');
    assert.equal(s.header.version, 2);
    assert.equal(s.header.addresses, null);
    assert.equal(proxyHeaderView(s.header).source, null);
  });

  for (const [name, version, family, host] of [
    ['v1 TCP4', 1, 'inet', '192.0.2.44'],
    ['v2 TCP6 with AUTHORITY and CRC32C', 2, 'inet6', '2001:db8::44'],
  ] as const) {
    it(`our encoder (${name}) is accepted by haproxy's accept-proxy, which relays the same client`, async () => {
      const port = lowPort();
      const header = encodeProxyHeader(
        {
          addresses: {
            family,
            source: { host, port },
            destination: { host: family === 'inet' ? '198.51.100.5' : '2001:db8::5', port: 80 },
          },
          tlvs: version === 2 ? [{ type: 'authority', value: 'relayed.example' }] : [],
        },
        { version, crc32c: version === 2 },
      );
      const client = net.connect(ports.accept, '127.0.0.1');
      await once(client, 'connect');
      await exchange(client, Buffer.concat([header, Buffer.from('hello')]));
      const s = await seenWhere(
        (x) => x.header.addresses?.family === family && x.header.addresses.source.port === port,
      );
      assert.deepEqual(s.header.addresses?.source, { host, port });
      if (version === 2) assert.equal(proxyHeaderView(s.header).tlvs.authority, 'relayed.example');
    });
  }

  it('haproxy refuses a header whose CRC32C we damaged: nothing reaches the reader', async () => {
    const port = lowPort();
    const header = Buffer.from(
      encodeProxyHeader(
        {
          addresses: {
            family: 'inet',
            source: { host: '192.0.2.45', port },
            destination: { host: '192.0.2.1', port: 1 },
          },
        },
        { version: 2, crc32c: true },
      ),
    );
    header[header.length - 1]! ^= 0xff; // the last byte of the CRC32C value
    const client = net.connect(ports.accept, '127.0.0.1');
    await once(client, 'connect');
    // haproxy closes or resets the connection: either way, no answer.
    const answer = await exchange(client, Buffer.concat([header, Buffer.from('hello')])).catch(
      (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? '' : Promise.reject(e)),
    );
    assert.equal(answer, '');
    await sleep(100);
    assert.equal(seen.find(fromPort(port)), undefined);
  });

  it('nginx stream with proxy_protocol on: a v1 header with the client’s address', {
    skip:
      NGINX_STREAM === null
        ? 'needs nginx with its stream module (Debian: nginx libnginx-mod-stream)'
        : false,
  }, async () => {
    const client = net.connect(ports.nginx, '127.0.0.1');
    await once(client, 'connect');
    const local = { host: client.localAddress, port: client.localPort };
    const answer = await exchange(client, 'hello');
    const s = await seenWhere(fromPort(local.port));
    assert.equal(s.header.version, 1);
    assert.deepEqual(s.header.addresses?.destination, { host: '127.0.0.1', port: ports.nginx });
    assert.match(answer, /^HTTP\/1\.1 200 OK/);
  });

  it('curl --haproxy-protocol: a v1 header with curl’s own address, then its request', async () => {
    // Not execFileSync: the reader runs in this process and must keep answering.
    const { stdout: out } = await execFileAsync('curl', [
      '-sS',
      '--max-time',
      '5',
      '--haproxy-protocol',
      `http://127.0.0.1:${ports.server}/path`,
    ]);
    // curl's header names curl itself: its source is the reader's TCP peer (not so behind haproxy or nginx).
    const s = await seenWhere(
      (x) =>
        x.header.version === 1 &&
        x.header.addresses?.family === 'inet' &&
        x.header.addresses.source.port === x.peerPort,
    );
    assert.equal(s.header.version, 1);
    assert.deepEqual(s.header.addresses?.source, { host: '127.0.0.1', port: s.peerPort });
    assert.deepEqual(s.header.addresses?.destination, { host: '127.0.0.1', port: ports.server });
    // The request follows the header, in the same segment or a later one.
    await seenWhere(() => s.data.includes('\r\n\r\n'));
    assert.match(s.data, /^GET \/path HTTP\/1\.1\r\n/);
    assert.equal(JSON.parse(out).source, `127.0.0.1:${s.peerPort}`);
  });
});
