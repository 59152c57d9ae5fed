/**
 * The proxies under test, each with the smallest configuration that makes it a forward proxy on
 * loopback with one worker, no cache and no access log, so that every row measures forwarding.
 * Two rows are not forward proxies: nginx and haproxy with a fixed upstream can only send every
 * request to one origin, which is the stretch goal of S1 and nothing else.
 *
 * Every proxy listens on its own fixed port below the ephemeral range (see the Linux notes:
 * a listener inside it can meet EADDRINUSE from other clients' TIME_WAIT sockets).
 */
import { join } from 'node:path';
import { ensureS8Certs, MITMPROXY, oxyS8Yaml, S8 } from './intercept.ts';
import { conf, dirFor, launch, nginxMain } from './launch.ts';
import { type Proc, startProcess, waitForUdpPort } from './procs.ts';
import { L4_PROXIES, oxyL4Endpoint } from './proxies-l4.ts';
import { startUpgradeHost } from './scenarios-l3.ts';

/**
 * The scenarios of the issue. S6 (a `tcp` endpoint) and S7 (a `udp` endpoint) have several
 * figures each, one scenario per figure: `S6` and `S7` on the command line name all of theirs.
 * S11 (CONNECT-UDP over HTTP/2 through Oxy's default `http` endpoint) has S11a (one stream) and
 * S11b (100 streams); `S11` on the command line names them and S7b, the same load through a
 * plain `udp` endpoint, so the two are measured in the same run.
 */
export const SCENARIOS = [
  'S1',
  'S2',
  'S3',
  'S4',
  'S5',
  'S6a',
  'S6b',
  'S7a',
  'S7b',
  'S7c',
  'S10a',
  'S10b',
  'S9',
  'S8a',
  'S8b',
  'S11a',
  'S11b',
] as const;
/** One scenario name. */
export type Scenario = (typeof SCENARIOS)[number];
/** The HTTP scenarios, docs/benchmarks.md. */
export const HTTP_SCENARIOS: readonly Scenario[] = ['S1', 'S2', 'S3', 'S4', 'S5'];
/** The layer-4 scenarios, docs/bench-l4.md. */
export const L4_SCENARIOS: readonly Scenario[] = ['S6a', 'S6b', 'S7a', 'S7b', 'S7c'];
/** The IP→TCP upgrade, docs/bench-l3.md. */
export const L3_SCENARIOS: readonly Scenario[] = ['S10a', 'S10b'];

/** Where things are, handed to every proxy's `start`. */
export interface BenchEnv {
  /** The repository root. */
  readonly root: string;
  /** Scratch directory for configs and logs of this run. */
  readonly work: string;
  /** The upstream origin, host:port. */
  readonly upstream: string;
  /** The UDP echo upstream of S7, host:port. */
  readonly udpEcho: string;
  /** The DNS responder of S7, host:port. */
  readonly dns: string;
  /** The pinned Node 24 binary. */
  readonly node: string;
  /** Extra environment for Oxy (e.g. NODE_OPTIONS=--cpu-prof). */
  readonly oxyEnv: NodeJS.ProcessEnv;
}

/** A running proxy. */
export interface Running {
  readonly proc: Proc;
  readonly addr: string;
}

/** One row of the comparison. */
export interface ProxyDef {
  readonly name: string;
  /** What it is, for the docs. */
  readonly note: string;
  /** Scenarios it can take part in (others are reported as not applicable). */
  readonly scenarios: readonly Scenario[];
  /** Debian package it needs, if any. */
  readonly apt?: string;
  /** Starts it on 127.0.0.1:port, set up for `scenario`; resolves once it accepts connections. */
  start?(env: BenchEnv, port: number, scenario: Scenario): Promise<Running>;
}

const ALL: readonly Scenario[] = ['S1', 'S2', 'S3', 'S4', 'S5'];
const FORWARD_ONLY: readonly Scenario[] = ['S1'];

/**
 * trafficserver's settings for the benchmarks: one exec thread, cache off, any CONNECT port, no
 * Via, no logs. records.config entries can be overridden by PROXY_CONFIG_* variables, so the
 * packaged config stays untouched.
 */
export function trafficserverEnv(port: number): Record<string, string> {
  return {
    PROXY_CONFIG_HTTP_SERVER_PORTS: String(port),
    PROXY_CONFIG_URL_REMAP_REMAP_REQUIRED: '0',
    PROXY_CONFIG_REVERSE_PROXY_ENABLED: '0',
    PROXY_CONFIG_HTTP_CACHE_HTTP: '0',
    PROXY_CONFIG_EXEC_THREAD_AUTOCONFIG: '0',
    PROXY_CONFIG_EXEC_THREAD_LIMIT: '1',
    PROXY_CONFIG_ACCEPT_THREADS: '0',
    PROXY_CONFIG_HTTP_CONNECT_PORTS: '1-65535',
    PROXY_CONFIG_HTTP_INSERT_REQUEST_VIA_STR: '0',
    PROXY_CONFIG_HTTP_INSERT_RESPONSE_VIA_STR: '0',
    PROXY_CONFIG_NET_CONNECTIONS_THROTTLE: '30000',
    PROXY_CONFIG_LOG_LOGGING_ENABLED: '0',
  };
}
/** Every row, in the order the tables show them. `direct` has no proxy: it is the machine's limit. */
export const PROXIES: readonly ProxyDef[] = [
  {
    name: 'direct',
    note: 'client straight to the upstream, no proxy: the limit of the machine',
    scenarios: ['S1', 'S2', 'S3', 'S5', 'S6a', 'S6b', 'S7a', 'S7b', 'S7c', 'S8a', 'S8b', 'S9', 'S10a'],
  },
  {
    name: 'oxy',
    note: 'this project, default forward proxy (`oxy -c`), one worker; for S6 and S7 a `tcp` or `udp` endpoint with a fixed target instead; for S10 the IP→TCP upgrade service bridged to a client namespace (bench/tools/upgrade-host.ts)',
    scenarios: SCENARIOS,
    start(env, port, scenario) {
      if (scenario.startsWith('S10')) return startUpgradeHost(env, 'oxy', port);
      return startOxy(env, 'oxy', port, 1, scenario);
    },
  },
  {
    name: 'oxy-ref',
    note: 'Oxy from another checkout (`BENCH_OXY_REF`, its `node_modules` installed and addon built) with `OXY_NODE_FLAGS` from `BENCH_OXY_REF_FLAGS` and extra environment from `BENCH_OXY_REF_ENV` (`K=V,K=V`) if set, for a before/after in one run',
    scenarios: ['S1', 'S2', 'S3', 'S4', 'S6a', 'S6b', 'S7a', 'S7b', 'S7c'],
    start(env, port, scenario) {
      const root = process.env.BENCH_OXY_REF ?? env.root;
      const flags = process.env.BENCH_OXY_REF_FLAGS;
      const extra = Object.fromEntries(
        (process.env.BENCH_OXY_REF_ENV ?? '')
          .split(',')
          .filter((kv) => kv.includes('='))
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      const oxyEnv = { ...env.oxyEnv, ...extra, ...(flags === undefined ? {} : { OXY_NODE_FLAGS: flags }) };
      const refEnv = { ...env, root, oxyEnv };
      return startOxy(refEnv, 'oxy-ref', port, 1, scenario);
    },
  },
  {
    name: 'oxy-body',
    note: 'this project with a body hook that counts every response body byte (bench/apps/body-count.ts); S9 only',
    scenarios: ['S9'],
    start(env, port) {
      return startOxy(env, 'oxy-body', port, 1, 'S9', { app: 'bench/apps/body-count.ts' });
    },
  },
  {
    name: 'oxy-head',
    note: 'the same app with a response-head hook only: the same forwarding path without a body stage; S9 only',
    scenarios: ['S9'],
    start(env, port) {
      return startOxy(env, 'oxy-head', port, 1, 'S9', {
        app: 'bench/apps/body-count.ts',
        env: { OXY_BENCH_BODY: 'head' },
      });
    },
  },
  {
    name: 'oxy-cubic',
    note: 'this project with `endpoints.main.tcp_congestion_control: cubic`: its sends to the client paced by cubic whatever the system default (BBR on some machines, where it halves S2; bench/analysis.md)',
    scenarios: ['S2'],
    start(env, port) {
      return startOxy(env, 'oxy-cubic', port, 1, 'S2', null, 'cubic');
    },
  },
  {
    name: 'oxy-2w',
    note: 'this project with `workers: 2` (one process per core sharing the listener); here the load generator and upstream share those two cores, so this row cannot show the 2-worker scaling the target asks for (see docs: Multi-core)',
    scenarios: ['S1', 'S3'],
    start(env, port) {
      return startOxy(env, 'oxy-2w', port, 2);
    },
  },

  {
    name: 'squid',
    note: 'Squid, `-N` (one process), cache off',
    scenarios: ALL,
    apt: 'squid',
    start(env, port) {
      const dir = dirFor(env, 'squid');
      const cfg = conf(
        env,
        'squid',
        'squid.conf',
        `http_port 127.0.0.1:${port}
http_access allow all
cache deny all
access_log none
cache_store_log none
cache_log ${dir}/cache.log
pid_filename ${dir}/squid.pid
coredump_dir ${dir}
max_filedescriptors 65536
shutdown_lifetime 0 seconds
client_db off
via off
forwarded_for transparent
`,
      );
      return launch(env, 'squid', port, 'squid', ['-N', '-f', cfg]);
    },
  },
  {
    name: 'tinyproxy',
    note: 'tinyproxy (a thread per connection); its S1 errors are keep-alive connections it closed under wrk',
    scenarios: ALL,
    apt: 'tinyproxy',
    start(env, port) {
      const dir = dirFor(env, 'tinyproxy');
      const cfg = conf(
        env,
        'tinyproxy',
        'tinyproxy.conf',
        `User nobody
Group nogroup
Port ${port}
Listen 127.0.0.1
Timeout 600
MaxClients 20000
LogLevel Critical
LogFile "${dir}/tinyproxy.log"
PidFile "${dir}/tinyproxy.pid"
DisableViaHeader Yes
`,
      );
      return launch(env, 'tinyproxy', port, 'tinyproxy', ['-d', '-c', cfg]);
    },
  },
  {
    name: 'trafficserver',
    note: 'Apache Traffic Server, one exec thread, cache off',
    scenarios: ALL,
    apt: 'trafficserver',
    start(env, port) {
      return launch(env, 'trafficserver', port, 'traffic_server', [], trafficserverEnv(port), 60000);
    },
  },
  {
    name: 'nginx-forward',
    note: 'nginx as a dynamic forward proxy (`proxy_pass http://$http_host$request_uri`), one worker; no CONNECT',
    scenarios: FORWARD_ONLY,
    apt: 'nginx-light',
    start(env, port) {
      return startNginx(env, 'nginx-forward', port, 'proxy_pass http://$http_host$request_uri;', '');
    },
  },
  {
    name: 'nginx-fixed',
    note: 'nginx with a fixed upstream (keep-alive pool), one worker: cannot forward to any host',
    scenarios: FORWARD_ONLY,
    apt: 'nginx-light',
    start(env, port) {
      return startNginx(
        env,
        'nginx-fixed',
        port,
        'proxy_pass http://up;',
        `upstream up { server ${env.upstream}; keepalive 128; }`,
      );
    },
  },
  {
    name: 'haproxy-fixed',
    note: 'HAProxy with a fixed upstream, one thread: cannot forward to any host',
    scenarios: FORWARD_ONLY,
    apt: 'haproxy',
    start(env, port) {
      const cfg = conf(
        env,
        'haproxy-fixed',
        'haproxy.cfg',
        `global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:${port}
  default_backend b
backend b
  server up ${env.upstream}
`,
      );
      return launch(env, 'haproxy-fixed', port, 'haproxy', ['-db', '-f', cfg]);
    },
  },
  {
    name: 'proxy-chain',
    note: 'Apify proxy-chain (Node.js), one process',
    scenarios: ALL,
    start(env, port) {
      return launch(env, 'proxy-chain', port, env.node, [
        join(env.root, 'bench/peers/proxy-chain.js'),
        String(port),
      ]);
    },
  },
  {
    name: 'http-proxy',
    note: 'a forward proxy on the `http-proxy` library (Node.js), one process',
    scenarios: ALL,
    start(env, port) {
      return launch(env, 'http-proxy', port, env.node, [
        join(env.root, 'bench/peers/http-proxy.js'),
        String(port),
      ]);
    },
  },
  ...L4_PROXIES,
  MITMPROXY,
];

function startNginx(env: BenchEnv, name: string, port: number, pass: string, upstreamBlock: string) {
  const dir = dirFor(env, name);
  const cfg = conf(
    env,
    name,
    'nginx.conf',
    `${nginxMain(dir)}http {
  access_log off;
  ${upstreamBlock}
  server {
    listen 127.0.0.1:${port} reuseport;
    location / {
      ${pass}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
`,
  );
  return launch(env, name, port, 'nginx', ['-p', dir, '-c', cfg]);
}

/** The upstream origin: nginx with keep-alive, serving files from tmpfs. */
export function startUpstream(env: BenchEnv, port: number, docroot: string): Promise<Running> {
  const dir = dirFor(env, 'upstream');
  const cfg = conf(
    env,
    'upstream',
    'nginx.conf',
    `${nginxMain(dir)}http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_header_timeout 300s;
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    root ${docroot};
  }
}
`,
  );
  return launch(env, 'upstream', port, 'nginx', ['-p', dir, '-c', cfg]);
}

/** Oxy's default forward proxy with only what loopback benchmarking needs changed. */
async function startOxy(
  env: BenchEnv,
  name: string,
  port: number,
  workers: number,
  scenario: Scenario = 'S1',
  custom: { readonly app: string; readonly env?: NodeJS.ProcessEnv } | null = null,
  congestion = '',
): Promise<Running> {
  const dir = dirFor(env, name);
  const l4 = oxyL4Endpoint(env, port, scenario);
  // S8: interception on, the TLS origin's CA trusted for origins.
  const s8 = S8.includes(scenario) ? await ensureS8Certs(env.work) : null;
  const cfg = conf(
    env,
    name,
    'oxy.yaml',
    [
      '# Benchmark settings: the default forward proxy on a loopback port, allowed to reach the',
      '# loopback upstream (egress to loopback is blocked by default), with its own restart',
      '# socket so that another Oxy on this machine cannot stop it from starting.',
      'endpoints:',
      ...(l4?.yaml ?? [
        '  main:',
        `    addr: "127.0.0.1:${port}"`,
        ...(congestion === '' ? [] : [`    tcp_congestion_control: ${congestion}`]),
      ]),
      'egress:',
      '  blocked_cidrs: []',
      ...(s8 === null ? [] : ['  tls:', `    extra_ca: ["${s8.ca}"]`, ...oxyS8Yaml(env, name)]),
      `workers: ${workers}`,
      'restart:',
      `  socket: "${dir}/restart.sock"`,
      '',
    ].join('\n'),
  );
  // An app of the bench's own (S9) runs its script with the pinned Node instead of `oxy`.
  if (custom !== null)
    return launch(env, name, port, env.node, [join(env.root, custom.app), '-c', cfg], {
      ...env.oxyEnv,
      ...custom.env,
    });
  const bin = join(env.root, 'node_modules/.bin/oxy');
  return launch(env, name, port, bin, ['-c', cfg], env.oxyEnv, s8 === null ? 15000 : 30000, l4?.udp ?? false);
}

/** The UDP upstreams of S7: bench/tools/udp-peers.ts (echo and DNS) on fixed loopback ports. */
export async function startUdpPeers(env: BenchEnv, echoPort: number, dnsPort: number): Promise<Running> {
  const proc = startProcess(
    'udp-peers',
    env.node,
    [join(env.root, 'bench/tools/udp-peers.ts'), '--echo', String(echoPort), '--dns', String(dnsPort)],
    { logFile: join(dirFor(env, 'udp-peers'), 'out.log') },
  );
  await waitForUdpPort(dnsPort, 15000, proc);
  return { proc, addr: `127.0.0.1:${echoPort}` };
}
