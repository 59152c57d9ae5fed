/**
 * The rows of the layer-4 scenarios (S6: a `tcp` endpoint, S7: a `udp` endpoint), each with a
 * fixed target and one worker: HAProxy `mode tcp` (TCP only) and nginx's stream module (TCP and
 * UDP), and the endpoint Oxy's own row uses for them. S6 targets the harness's HTTP upstream;
 * S7a/S7b its UDP echo server and S7c its DNS responder (bench/tools/udp-peers.ts).
 */
import { conf, dirFor, launch, nginxMain } from './launch.ts';
import type { BenchEnv, ProxyDef, Scenario } from './proxies.ts';

const S6: readonly Scenario[] = ['S6a', 'S6b'];
const S7: readonly Scenario[] = ['S7a', 'S7b', 'S7c'];

/** The fixed target of a layer-4 scenario. */
function targetOf(env: BenchEnv, scenario: Scenario): string {
  if (scenario === 'S7c') return env.dns;
  return S7.includes(scenario) ? env.udpEcho : env.upstream;
}

/**
 * Oxy's endpoint for a layer-4 scenario, as YAML lines under `endpoints:`, or null for the
 * HTTP scenarios (the default forward proxy).
 */
export function oxyL4Endpoint(
  env: BenchEnv,
  port: number,
  scenario: Scenario,
): { yaml: string[]; udp: boolean } | null {
  if (!S6.includes(scenario) && !S7.includes(scenario)) return null;
  const udp = S7.includes(scenario);
  const protocol = udp ? 'udp' : 'tcp';
  return {
    udp,
    yaml: [
      '  l4:',
      `    protocol: ${protocol}`,
      `    addr: "127.0.0.1:${port}"`,
      `    ${protocol}:`,
      `      target: "${targetOf(env, scenario)}"`,
    ],
  };
}

/** The rows that take part in S6 and S7 only. */
export const L4_PROXIES: readonly ProxyDef[] = [
  {
    name: 'haproxy-tcp',
    note: 'HAProxy `mode tcp` with a fixed target, one thread (S6 only: HAProxy does not proxy UDP); default buffers, no `option splice-auto`',
    scenarios: S6,
    apt: 'haproxy',
    start(env, port) {
      const cfg = conf(
        env,
        'haproxy-tcp',
        'haproxy.cfg',
        `global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:${port}
  default_backend b
backend b
  server up ${env.upstream}
`,
      );
      return launch(env, 'haproxy-tcp', port, 'haproxy', ['-db', '-f', cfg]);
    },
  },
  {
    name: 'nginx-stream',
    note: 'nginx `stream` module with a fixed target, one worker: TCP for S6, `listen … udp` for S7 (with `proxy_responses 1` for DNS)',
    scenarios: [...S6, ...S7],
    apt: 'libnginx-mod-stream',
    start(env, port, scenario) {
      const dir = dirFor(env, 'nginx-stream');
      const udp = S7.includes(scenario);
      const server = udp
        ? `listen 127.0.0.1:${port} udp; proxy_timeout 60s; proxy_buffer_size 64k;${scenario === 'S7c' ? ' proxy_responses 1;' : ''}`
        : `listen 127.0.0.1:${port};`;
      const cfg = conf(
        env,
        'nginx-stream',
        'nginx.conf',
        `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
${nginxMain(dir)}stream {
  server { ${server} proxy_pass ${targetOf(env, scenario)}; }
}
`,
      );
      return launch(env, 'nginx-stream', port, 'nginx', ['-p', dir, '-c', cfg], {}, 15000, udp);
    },
  },
];
