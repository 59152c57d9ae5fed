/**
 * S8: intercepted HTTPS through CONNECT. The origin is nginx with TLS (a certificate from a CA
 * made here with openssl, which each proxy is told to trust for origins); the client trusts only
 * the proxy's interception CA. S8a counts requests/s on keep-alive connections inside 32
 * intercepted tunnels; S8b counts new intercepted tunnels/s (CONNECT, TLS with a minted leaf,
 * one `GET /1k`, close), 32 at a time. Both with the proxy's CPU time per unit of work. The
 * load client is C over OpenSSL (bench/tools/tls-load.c), so the proxies, not the client, set
 * the rate. The peer is mitmproxy (`mitmdump`, Debian), the reference intercepting proxy.
 *
 * Ordering rule: `ensureS8Certs` runs before the origin and any proxy start (the proxies read
 * the origin CA at start-up); a proxy's interception CA exists once it listens.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { conf, dirFor, launch, nginxMain } from './launch.ts';
import { runCommand } from './procs.ts';
import type { BenchEnv, ProxyDef, Running, Scenario } from './proxies.ts';
import type { Figures, ScenarioEnv } from './scenarios.ts';
import { buildTool } from './setup.ts';
import { cpuSplit, cpuSplitSince } from './threads.ts';

/** The TLS origin's fixed port (below the ephemeral range, like every port of the harness). */
export const S8_ORIGIN_PORT = 21083;
/** The S8 scenarios. */
export const S8: readonly Scenario[] = ['S8a', 'S8b'];

/** What each S8 figure measures, merged into METRICS. */
export const S8_METRICS = {
  S8a: {
    title: 'S8a: intercepted HTTPS, keep-alive requests',
    unit: 'requests/s',
    higherIsBetter: true,
    what: '32 intercepted CONNECT tunnels, each `GET /1k` after `GET /1k` on one TLS connection (client trusts only the proxy CA), 10 s (bench/tools/tls-load.c); CPU per request',
  },
  S8b: {
    title: 'S8b: new intercepted tunnels',
    unit: 'tunnels/s',
    higherIsBetter: true,
    what: 'CONNECT, full TLS handshake with the minted leaf (no resumption), one `GET /1k`, close; 32 at a time for 10 s (bench/tools/tls-load.c); CPU per tunnel',
  },
} as const;

/** The origin CA and leaf, made once per work directory with openssl. */
export async function ensureS8Certs(work: string): Promise<{ dir: string; ca: string }> {
  const dir = join(work, 's8-certs');
  const ca = join(dir, 'origin-ca.pem');
  if (existsSync(ca)) return { dir, ca };
  mkdirSync(dir, { recursive: true });
  const sh = `cd ${dir} &&
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout origin-ca-key.pem -out origin-ca.pem -days 30 -subj "/CN=S8 origin CA" -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign 2>/dev/null &&
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout origin-key.pem -out origin.csr -subj "/CN=localhost" 2>/dev/null &&
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf &&
openssl x509 -req -in origin.csr -CA origin-ca.pem -CAkey origin-ca-key.pem -CAcreateserial -out origin.pem -days 30 -extfile ext.cnf 2>/dev/null`;
  const r = await runCommand('sh', ['-c', sh]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { dir, ca };
}

/**
 * The TLS origin: nginx serving the docroot over HTTPS with keep-alive, on both loopback
 * addresses of `localhost` (the name the client CONNECTs to), as a real origin answers on every
 * address its name resolves to. On 127.0.0.1 alone, each proxy's connect to ::1 (tried first)
 * was refused on every new tunnel: a third of Oxy's CPU per tunnel went to that failure.
 */
export async function startTlsOrigin(env: BenchEnv, docroot: string): Promise<Running> {
  const certs = await ensureS8Certs(env.work);
  const dir = dirFor(env, 'tls-origin');
  const cfg = conf(
    env,
    'tls-origin',
    'nginx.conf',
    `${nginxMain(dir)}http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  ssl_session_cache shared:S8:10m;
  server {
    listen 127.0.0.1:${S8_ORIGIN_PORT} ssl reuseport backlog=4096;
    listen [::1]:${S8_ORIGIN_PORT} ssl reuseport backlog=4096;
    ssl_certificate ${certs.dir}/origin.pem;
    ssl_certificate_key ${certs.dir}/origin-key.pem;
    root ${docroot};
  }
}
`,
  );
  return launch(env, 'tls-origin', S8_ORIGIN_PORT, 'nginx', ['-p', dir, '-c', cfg]);
}

/** Oxy's extra settings for S8 (top-level keys): interception on. */
export function oxyS8Yaml(env: BenchEnv, name: string): string[] {
  return ['interception:', '  enabled: true', '  ca:', `    dir: "${join(dirFor(env, name), 'ca')}"`];
}

/** Where each proxy keeps the interception CA the client trusts. */
function caOf(work: string, proxy: string): string {
  if (proxy === 'mitmproxy') return join(work, 'mitmproxy', 'conf', 'mitmproxy-ca-cert.pem');
  if (proxy === 'direct') return join(work, 's8-certs', 'origin-ca.pem');
  return join(work, proxy, 'ca', 'ca.pem');
}

/** mitmproxy's row: `mitmdump`, quiet, verifying origins against the S8 origin CA. */
export const MITMPROXY: ProxyDef = {
  name: 'mitmproxy',
  note: 'mitmproxy 8 (`mitmdump -q`, Debian), the reference intercepting proxy; S8 only',
  scenarios: S8,
  apt: 'mitmproxy',
  async start(env, port) {
    const certs = await ensureS8Certs(env.work);
    const dir = join(dirFor(env, 'mitmproxy'), 'conf');
    mkdirSync(dir, { recursive: true });
    return launch(
      env,
      'mitmproxy',
      port,
      'mitmdump',
      [
        '-q',
        '--listen-host',
        '127.0.0.1',
        '-p',
        String(port),
        '--set',
        `confdir=${dir}`,
        '--set',
        `ssl_verify_upstream_trusted_ca=${certs.ca}`,
      ],
      {},
      30000,
    );
  },
};

/**
 * Builds bench/tools/tls-load.c (C over OpenSSL: a Node.js TLS client cost as much CPU per
 * request as the proxies it measured) once per work directory; returns the binary's path.
 */
export function buildTlsLoad(root: string, work: string): Promise<string> {
  return buildTool(root, work, 'tls-load', ['-lssl', '-lcrypto'], ' (needs libssl-dev)');
}

/** S8a or S8b through `proxy` (null: straight to the origin). */
export async function runS8(
  env: ScenarioEnv,
  sc: Scenario,
  proxyName: string,
  proxy: string | null,
  pid: number | null,
): Promise<Figures> {
  const seconds = env.quick ? 3 : 10;
  const load = await buildTlsLoad(env.root, env.work);
  const args = [
    sc === 'S8a' ? 'keepalive' : 'tunnels',
    '--target',
    `127.0.0.1:${S8_ORIGIN_PORT}`,
    '--ca',
    caOf(env.work, proxyName),
    '-c',
    '32',
  ];
  if (proxy !== null) args.push('--proxy', proxy);
  // Warm-up: leaves minted, sessions and pools filled.
  await runCommand(load, [...args, '-d', '1'], { timeoutMs: 30000 });
  const before = pid ? cpuSplit(pid) : null;
  const r = await runCommand(load, [...args, '-d', String(seconds)], {
    timeoutMs: (seconds + 30) * 1000,
  });
  const cpu = pid && before ? cpuSplitSince(pid, before) : null;
  const line = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`tls-load printed nothing: ${r.stderr.slice(-300)}`);
  const j = JSON.parse(line) as { count: number; seconds: number; errors: number };
  if (j.count === 0) throw new Error(`no exchange succeeded (errors ${j.errors}): ${r.stderr.slice(-300)}`);
  const rate = j.count / j.seconds;
  const unit = sc === 'S8a' ? 'request' : 'tunnel';
  return {
    primary: rate,
    rate,
    errors: j.errors,
    ...(cpu ? { [`cpu_us_per_${unit}`]: (cpu.total * 1e6) / j.count } : {}),
  };
}
