/**
 * `--check` runs every validation start-up runs short of binding sockets, on the real program:
 * for each bad value, `--check` exits 2 with one line naming the key and the file, and a start
 * with the same file fails the same way (exit 2, one line, no stack, before the app's `start`);
 * a configuration `--check` accepts starts.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { cleanEnv } from '../../foundations/test/fixtures/restart-harness.ts';

const APP = path.join(import.meta.dirname, 'fixtures', 'restart-app.ts');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-check-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The settings every case starts from: nothing that could clash with another test. */
const BASE = `restart:\n  enabled: false\ntelemetry:\n  server:\n    enabled: false\n`;

function run(
  args: string[],
  untilLine?: RegExp,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [APP, ...args], {
      cwd: dir,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    // A bound, not an expectation: one start on a loaded two-core machine took over 10 s.
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (untilLine?.test(stdout)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `--check` and a start with `yaml` (over BASE) both fail: exit 2, one line matching `line`. */
async function failsBoth(name: string, yaml: string, line: RegExp, base = BASE): Promise<void> {
  fs.writeFileSync(path.join(dir, name), base + yaml);
  const check = await run(['--check', '-c', name]);
  assert.equal(check.code, 2, check.stderr);
  assert.match(check.stderr, line);
  assert.match(check.stderr, new RegExp(`\\(in ${name.replace('.', '\\.')}\\)\\n`), 'the file is named');
  const start = await run(['-c', name]);
  assert.equal(start.code, 2, start.stderr);
  assert.match(start.stderr, line);
  assert.equal(start.stderr.trimEnd().split('\n').length, 1, `one line, no stack: ${start.stderr}`);
  assert.doesNotMatch(start.stdout, /"pid"/, "the app's start never ran");
}

test('a TLS certificate that cannot be read', async () => {
  await failsBoth(
    'tls.yaml',
    'endpoints:\n  main:\n    addr: 127.0.0.1:0\n    tls:\n      enabled: true\n      cert: missing-cert.pem\n      key: missing-key.pem\n',
    /^oxy-restart-test: endpoints\.main\.tls\.cert: cannot read missing-cert\.pem: ENOENT/m,
  );
});

test('an audit file in a directory that does not exist', async () => {
  await failsBoth(
    'audit.yaml',
    'audit:\n  output: file\n  path: /nonexistent-dir/audit.log\n',
    /^oxy-restart-test: audit\.path: directory \/nonexistent-dir does not exist/m,
  );
});

test('http2.max_frame_size below the 16KiB minimum of RFC 9113', async () => {
  await failsBoth(
    'frame.yaml',
    'endpoints:\n  main:\n    addr: 127.0.0.1:0\n    http2:\n      max_frame_size: 1KiB\n',
    /^oxy-restart-test: endpoints\.main\.http2\.max_frame_size: must be between 16384 and 16777215 bytes, got 1024/m,
  );
});

test('a duration past the longest Node.js timer (it would fire after 1 ms), or a PROXY header_timeout of 0s', async () => {
  const pp = (timeout: string) =>
    `endpoints:\n  main:\n    addr: 127.0.0.1:0\n    proxy_protocol:\n      enabled: true\n      header_timeout: ${timeout}\n`;
  await failsBoth(
    'pp-30d.yaml',
    pp('30d'),
    /^oxy-restart-test: endpoints\.main\.proxy_protocol\.header_timeout: expected a duration like "10s" or "250ms", got "30d" \(longer than 24d20h31m23s647ms, the longest Node\.js timer\)/m,
  );
  await failsBoth(
    'pp-0s.yaml',
    pp('0s'),
    /^oxy-restart-test: endpoints\.main\.proxy_protocol\.header_timeout: expected a duration like "10s" or "250ms", got "0s" \(shorter than 1ms\)/m,
  );
  await failsBoth(
    'udp-100d.yaml',
    'endpoints:\n  main:\n    protocol: udp\n    addr: 127.0.0.1:0\n    udp:\n      target: 192.0.2.1:53\n      idle_timeout: 100d\n',
    /^oxy-restart-test: endpoints\.main\.udp\.idle_timeout: .*got "100d" \(longer than 24d20h31m23s647ms/m,
  );
});

test('two endpoints on one address', async () => {
  await failsBoth(
    'clash.yaml',
    'endpoints:\n  main:\n    addr: 127.0.0.1:18999\n  other:\n    addr: 0.0.0.0:18999\n',
    /^oxy-restart-test: endpoints\.other\.addr: 0\.0\.0\.0:18999 clashes with endpoints\.main\.addr \(127\.0\.0\.1:18999\)/m,
  );
});

test('a nameserver that is not an IP address', async () => {
  await failsBoth(
    'dns.yaml',
    'egress:\n  dns:\n    nameservers: ["not-an-ip"]\n',
    /^oxy-restart-test: egress\.dns\.nameservers\[0\]: expected an IP address with an optional port/m,
  );
});

test('a relative restart socket path', async () => {
  await failsBoth(
    'socket.yaml',
    'restart:\n  enabled: true\n  socket: relative.sock\n',
    /^oxy-restart-test: restart\.socket: must be an absolute path/m,
    'telemetry:\n  server:\n    enabled: false\n',
  );
});

test('a source address that is not an IP', async () => {
  await failsBoth(
    'source.yaml',
    'egress:\n  source_addr: my-host\n',
    /^oxy-restart-test: egress\.source_addr: expected an IP address of this host, got "my-host"/m,
  );
});

test('a source address this host does not have (every connect would fail with EADDRNOTAVAIL)', async () => {
  await failsBoth(
    'source-foreign.yaml',
    'egress:\n  source_addr: 203.0.113.9\n',
    /^oxy-restart-test: egress\.source_addr: 203\.0\.113\.9 is not an address of this host \(ip addr shows this host's addresses\)/m,
  );
});

test('a udp endpoint with workers: 2', async () => {
  await failsBoth(
    'workers-udp.yaml',
    'workers: 2\nendpoints:\n  dns:\n    protocol: udp\n    addr: 127.0.0.1:0\n    udp:\n      target: 127.0.0.1:53\n',
    /^oxy-restart-test: endpoints\.dns\.protocol: a udp endpoint runs in one process: set workers: 1/m,
  );
});

test('a malformed interception.hosts pattern (--check once accepted what a start refused)', async () => {
  await failsBoth(
    'hosts.yaml',
    'interception:\n  enabled: true\n  hosts: ["*.*.bad"]\n  ca:\n    dir: ca\n',
    /^oxy-restart-test: interception\.hosts\[0\]: "\*\.\*\.bad" is not a host name, an IP literal or \*\.domain/m,
  );
});

test('an interception CA that cannot be read, or is not a CA, or a CA directory under /proc (a start once hung there)', async () => {
  await failsBoth(
    'ca-missing.yaml',
    'interception:\n  enabled: true\n  ca:\n    cert: missing-ca.pem\n    key: missing-ca-key.pem\n',
    /^oxy-restart-test: interception\.ca\.cert: cannot read missing-ca\.pem: ENOENT/m,
  );
  await failsBoth(
    'ca-proc.yaml',
    'interception:\n  enabled: true\n  ca:\n    dir: /proc/oxy-test-ca\n',
    /^oxy-restart-test: interception\.ca\.dir: \/proc\/oxy-test-ca\/ca-key\.pem is under \/proc, a virtual file system/m,
  );
  await failsBoth(
    'ca-half.yaml',
    'interception:\n  enabled: true\n  ca:\n    key: some-key.pem\n',
    /^oxy-restart-test: interception\.ca\.cert: required when ca\.key is set/m,
  );
});

test('an egress.tls.extra_ca file that cannot be read (--check once accepted what a start refused)', async () => {
  await failsBoth(
    'extra-ca.yaml',
    'egress:\n  tls:\n    extra_ca: [missing-root.pem]\n',
    /^oxy-restart-test: egress\.tls\.extra_ca\[0\]: cannot read missing-root\.pem: ENOENT/m,
  );
});

test('a MASQUE template or address pool a start refuses (--check once accepted them)', async () => {
  const masque = (lines: string) =>
    `endpoints:\n  main:\n    addr: 127.0.0.1:0\n    masque:\n      enabled: true\n${lines}`;
  await failsBoth(
    'masque-template.yaml',
    masque('      udp_template: /masque/{target_host}/\n'),
    /^oxy-restart-test: endpoints\.main\.masque\.udp_template: URI template "\/masque\/\{target_host\}\/": a connect-udp template must contain \{target_port\}/m,
  );
  await failsBoth(
    'masque-pool.yaml',
    masque('      ip_pool: { ipv4: "fd00::/64" }\n'),
    /^oxy-restart-test: endpoints\.main\.masque\.ip_pool\.ipv4: "fd00::\/64" is not an IPv4 prefix/m,
  );
  await failsBoth(
    'masque-small.yaml',
    masque('      ip_pool: { ipv4: "100.64.0.0/31" }\n'),
    /^oxy-restart-test: endpoints\.main\.masque\.ip_pool\.ipv4: the prefix leaves no address after the gateway/m,
  );
});

test('a tcp_congestion_control the kernel does not have (--check once accepted it)', async () => {
  await failsBoth(
    'congestion.yaml',
    'endpoints:\n  main:\n    addr: 127.0.0.1:0\n    tcp_congestion_control: no-such-algorithm\n',
    /^oxy-restart-test: endpoints\.main\.tcp_congestion_control: .*"no-such-algorithm"/m,
  );
});

test('a tcp or udp target that is the endpoint itself (every connection would loop)', async () => {
  await failsBoth(
    'self-tcp.yaml',
    'egress:\n  blocked_cidrs: []\nendpoints:\n  raw:\n    protocol: tcp\n    addr: 0.0.0.0:18997\n    tcp:\n      target: 127.0.0.1:18997\n',
    /^oxy-restart-test: endpoints\.raw\.tcp\.target: 127\.0\.0\.1:18997 is this endpoint's own address \(0\.0\.0\.0:18997\)/m,
  );
  await failsBoth(
    'self-udp.yaml',
    'egress:\n  blocked_cidrs: []\nendpoints:\n  dns:\n    protocol: udp\n    addr: 127.0.0.1:18997\n    udp:\n      target: localhost:18997\n',
    /^oxy-restart-test: endpoints\.dns\.udp\.target: localhost:18997 is this endpoint's own address/m,
  );
  // The unspecified address connects to loopback; an IPv4-mapped address in hex is still IPv4.
  for (const [name, target] of [
    ['self-any', '0.0.0.0:18997'],
    ['self-mapped', '"[::ffff:7f00:1]:18997"'],
  ] as const)
    await failsBoth(
      `${name}.yaml`,
      `egress:\n  blocked_cidrs: []\nendpoints:\n  raw:\n    protocol: tcp\n    addr: 127.0.0.1:18997\n    tcp:\n      target: ${target}\n`,
      /^oxy-restart-test: endpoints\.raw\.tcp\.target: .* is this endpoint's own address \(127\.0\.0\.1:18997\)/m,
    );
});

test('a udp max_datagram_size outside one datagram, or an idle_timeout of 0s', async () => {
  const udp = (line: string) =>
    `endpoints:\n  u:\n    protocol: udp\n    addr: 127.0.0.1:0\n    udp:\n      target: 192.0.2.1:53\n      ${line}\n`;
  await failsBoth(
    'udp-size0.yaml',
    udp('max_datagram_size: 0B'),
    /^oxy-restart-test: endpoints\.u\.udp\.max_datagram_size: expected a size from 1B to 65535B \(the largest UDP datagram\), got 0B/m,
  );
  await failsBoth(
    'udp-size-big.yaml',
    udp('max_datagram_size: 100KiB'),
    /^oxy-restart-test: endpoints\.u\.udp\.max_datagram_size: .*got 102400B/m,
  );
  await failsBoth(
    'udp-idle0.yaml',
    udp('idle_timeout: 0s'),
    /^oxy-restart-test: endpoints\.u\.udp\.idle_timeout: expected a duration above 0s/m,
  );
});

test('a udp endpoint with no target and no PROXY header: --check warns and exits 0', async () => {
  fs.writeFileSync(
    path.join(dir, 'udp-hook.yaml'),
    `${BASE}endpoints:\n  u:\n    protocol: udp\n    addr: 127.0.0.1:0\n    udp:\n      target: ~\n`,
  );
  const check = await run(['--check', '-c', 'udp-hook.yaml']);
  assert.equal(check.code, 0, check.stderr);
  assert.match(
    check.stderr,
    /^oxy-restart-test: warning: endpoints\.u\.udp\.target: is empty and proxy_protocol is off, so nothing names a destination: every session is refused unless an EgressHook\.handleConnection sends it somewhere/m,
  );
});

test('an IP tunnel gateway of the wrong family, or a relative off-ramp path', async () => {
  const ip = (line: string) =>
    `endpoints:\n  t:\n    protocol: ip_seqpacket\n    addr: ${path.join(dir, 'ip.sock')}\n    ip:\n      ${line}\n`;
  await failsBoth(
    'gw4.yaml',
    ip('gateway_v4: "fd00::1"'),
    /^oxy-restart-test: endpoints\.t\.ip\.gateway_v4: expected an IPv4 address, got "fd00::1"/m,
  );
  await failsBoth(
    'offramp.yaml',
    ip('offramp: relative.sock'),
    /^oxy-restart-test: endpoints\.t\.ip\.offramp: must be an absolute path/m,
  );
});

test('a configuration --check accepts starts', async () => {
  fs.writeFileSync(
    path.join(dir, 'good.yaml'),
    `${BASE}endpoints:\n  main:\n    addr: 127.0.0.1:0\naudit:\n  output: file\n  path: ${path.join(dir, 'audit.log')}\n`,
  );
  const check = await run(['--check', '-c', 'good.yaml']);
  assert.equal(check.code, 0, check.stderr);
  assert.equal(check.stdout, 'good.yaml: ok\n');
  const start = await run(['-c', 'good.yaml'], /"pid"/);
  assert.match(start.stdout, /"pid"/, start.stderr);
});

test('what only binding can tell (an address in use) fails a start as one line naming the key, exit 2', async () => {
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  after(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  fs.writeFileSync(path.join(dir, 'busy.yaml'), `${BASE}endpoints:\n  main:\n    addr: 127.0.0.1:${port}\n`);
  const start = await run(['-c', 'busy.yaml']);
  assert.equal(start.code, 2, start.stderr);
  assert.match(
    start.stderr,
    new RegExp(
      `^oxy-restart-test: endpoints\\.main\\.addr: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`,
    ),
  );
  assert.equal(start.stderr.trimEnd().split('\n').length, 1, `one line, no stack: ${start.stderr}`);
});

test('a tcp target inside egress.blocked_cidrs: --check warns and exits 0, a start logs it once and runs', async () => {
  const yaml = `${BASE}endpoints:\n  raw:\n    protocol: tcp\n    addr: 127.0.0.1:0\n    tcp:\n      target: 127.0.0.1:5432\n`;
  fs.writeFileSync(path.join(dir, 'blocked.yaml'), yaml);
  const line =
    /endpoints\.raw\.tcp\.target: 127\.0\.0\.1:5432 is inside egress\.blocked_cidrs \(127\.0\.0\.0\/8\): every connection to it will be refused .* \(in blocked\.yaml\)/;
  const check = await run(['--check', '-c', 'blocked.yaml']);
  assert.equal(check.code, 0, check.stderr);
  assert.equal(check.stdout, 'blocked.yaml: ok\n');
  assert.match(check.stderr, new RegExp(`^oxy-restart-test: warning: ${line.source}`, 'm'));
  const start = await run(['-c', 'blocked.yaml'], /"pid"/);
  assert.match(start.stdout, /"pid"/, start.stderr);
  const logged = `${start.stdout}${start.stderr}`.split('\n').filter((l) => line.test(l));
  assert.equal(logged.length, 1, `logged once: ${start.stdout}${start.stderr}`);
  assert.match(logged[0] as string, /WARN/);
  // Allowed by the list: nothing to say.
  fs.writeFileSync(path.join(dir, 'allowed.yaml'), `${yaml}egress:\n  blocked_cidrs: []\n`);
  const quiet = await run(['--check', '-c', 'allowed.yaml']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
});

test('settings that refuse every client are warnings of --check: PROXY headers trusted from nobody, no target at all', async () => {
  fs.writeFileSync(
    path.join(dir, 'refuse-all.yaml'),
    `${BASE}endpoints:\n  raw:\n    protocol: tcp\n    addr: 127.0.0.1:0\n    tcp:\n      target: ~\n` +
      `  edge:\n    protocol: tcp\n    addr: 127.0.0.1:0\n    tcp:\n      target: 192.0.2.1:80\n    proxy_protocol:\n      enabled: true\n      trusted_cidrs: []\n`,
  );
  const check = await run(['--check', '-c', 'refuse-all.yaml']);
  assert.equal(check.code, 0, check.stderr);
  assert.match(
    check.stderr,
    /warning: endpoints\.raw\.tcp\.target: is empty and proxy_protocol is off, so nothing names a destination: every connection is refused unless an EgressHook\.handleConnection sends it somewhere/,
  );
  assert.match(
    check.stderr,
    /warning: endpoints\.edge\.proxy_protocol\.trusted_cidrs: is empty while proxy_protocol is enabled/,
  );
  // A header to name the destination, from a trusted peer: nothing to say.
  fs.writeFileSync(
    path.join(dir, 'pp-target.yaml'),
    `${BASE}endpoints:\n  raw:\n    protocol: tcp\n    addr: 127.0.0.1:0\n    tcp:\n      target: ~\n    proxy_protocol:\n      enabled: true\n`,
  );
  const quiet = await run(['--check', '-c', 'pp-target.yaml']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
});
