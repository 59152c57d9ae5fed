/**
 * The process under test of S10 (the IP→TCP upgrade): an Oxy runtime with no hooks and its
 * upgrade service, bridged to a client network namespace (`--ns`) whose default route is a TUN
 * device this process reads, standing in for an IP tunnel on-ramp. Every flow from the
 * namespace is redirected to `--upstream`. Once everything is up it listens on 127.0.0.1:`--port`
 * (only as the harness's readiness signal); the harness then runs curl or connload inside the
 * namespace (`ip netns exec`) and measures this process's CPU. SIGTERM ends it cleanly.
 *
 *   node bench/tools/upgrade-host.ts --port P --upstream 127.0.0.1:21080 --ns oxybench-s10
 *     [--mtu 65000] [--copy-reads]
 *
 * Both TUN devices are read into reused buffers unless `--copy-reads` (a Buffer per packet, the
 * default of the service): the fixture's port writes every packet before the next read.
 *
 * Needs root (ip netns add), like the test it shares the client fixture with.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { defineApp } from '../../packages/oxy/src/app.ts';
import { NO_EXT } from '../../packages/oxy/src/context/ext.ts';
import { EndpointState, IngressConnection } from '../../packages/oxy/src/context/state.ts';
import { startTcpUpgrade } from '../../packages/oxy/src/flows/ip/tcp-upgrade.ts';
import { NO_HOOKS } from '../../packages/oxy/src/hooks/run.ts';
import { appSettings } from '../../packages/oxy/src/proxy.ts';
import { Runtime } from '../../packages/oxy/src/runtime.ts';
import { ClientTunnel } from '../../packages/oxy/test/fixtures/client-tunnel.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    ns: { type: 'string', default: 'oxybench-s10' },
    mtu: { type: 'string', default: '65000' },
    // Both devices read into reused buffers (the fixture's port writes before the next read).
    'copy-reads': { type: 'boolean', default: false },
  },
});
const [host, port] = (values.upstream ?? '').split(':');
if (!values.port || !host || !port) {
  process.stderr.write('usage: upgrade-host.ts --port P --upstream H:P [--ns NAME] [--mtu N]\n');
  process.exit(2);
}
const mtu = Number(values.mtu);
spawnSync('ip', ['netns', 'del', values.ns!]); // a namespace left by a killed run

const app = defineApp({ name: 'bench-s10', version: '0', description: 'S10', start: () => ({}) });
const settings = appSettings(app, [
  {
    source: 'bench',
    value: {
      telemetry: { server: { enabled: false } },
      endpoints: { main: { addr: `127.0.0.1:${values.port}` } },
      egress: { blocked_cidrs: [] },
    },
  },
]);
const rt = new Runtime(NO_HOOKS, NO_EXT, settings);
const reuse = !values['copy-reads'];
const upgrade = await startTcpUpgrade(rt, { mtu, reuseReadBuffers: reuse });
const endpoint = new EndpointState('tun', settings.endpoints.main as never, NO_EXT);
const conn = new IngressConnection(
  endpoint,
  { peer: { host: '10.200.0.2', port: 0 }, local: { host: '10.200.0.1', port: 0 } },
  'tcp',
  NO_EXT,
);
const tunnel = new ClientTunnel(upgrade, conn, {
  name: values.ns!,
  mtu,
  redirect: { host, port: Number(port) },
  reuseBuffers: reuse,
});
// Readiness for the harness: nothing is served here.
const ready = net.createServer((s) => s.destroy()).listen(Number(values.port), '127.0.0.1');

let ending = false;
const end = async () => {
  if (ending) return;
  ending = true;
  ready.close();
  tunnel.close();
  await upgrade.close();
  process.stderr.write(`upgrade-host: ${tunnel.sent} packets to the client; flows left ${upgrade.flows}\n`);
  process.exit(0);
};
process.on('SIGTERM', () => void end());
process.on('SIGINT', () => void end());
