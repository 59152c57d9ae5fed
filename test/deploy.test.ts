/**
 * The operators' kit under deploy/ matches what Oxy really does: the Kubernetes settings pass
 * `oxy --check` and the Deployment agrees with them (probe port, grace period covering the
 * drain), the systemd units are the ones docs/restarts.md shows, and every series the Grafana
 * dashboard queries exists in a running Oxy's /metrics.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { parseDuration } from 'foundations/settings';
import { curl, startHttpUpstream } from 'oxy/testing';
import YAML from 'yaml';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '..');
const bin = path.join(repo, 'packages/oxy/bin/oxy');
const deploy = (f: string): string => fs.readFileSync(path.join(repo, 'deploy', f), 'utf8');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oxy-deploy-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field below
type Manifest = any;

test('Kubernetes: the ConfigMap passes oxy --check, and the Deployment and Service agree with it', async () => {
  const configMap: Manifest = YAML.parse(deploy('kubernetes/configmap.yaml'));
  const deployment: Manifest = YAML.parse(deploy('kubernetes/deployment.yaml'));
  const service: Manifest = YAML.parse(deploy('kubernetes/service.yaml'));
  const file = path.join(tmp, 'config.yaml');
  fs.writeFileSync(file, configMap.data['config.yaml']);
  const check = await run(bin, ['--check', '-c', file]);
  assert.equal(check.stdout, `${file}: ok\n`);

  const config = YAML.parse(configMap.data['config.yaml']);
  const pod = deployment.spec.template.spec;
  const [container] = pod.containers;
  const port = (name: string): number => container.ports.find((p: Manifest) => p.name === name).containerPort;
  assert.equal(port('telemetry'), Number(config.telemetry.server.addr.split(':').pop()));
  assert.equal(port('proxy'), Number(config.endpoints.main.addr.split(':').pop()));
  for (const probe of [container.readinessProbe, container.livenessProbe]) {
    assert.deepEqual(probe.httpGet, { path: '/health', port: 'telemetry' });
  }
  const drainMs = parseDuration(config.restart.drain_timeout)!;
  const preStopMs = (container.lifecycle?.preStop?.sleep?.seconds ?? 0) * 1000;
  assert.ok(
    pod.terminationGracePeriodSeconds * 1000 > drainMs + preStopMs,
    'the grace period covers the drain',
  );
  assert.ok(container.command.includes('/etc/oxy/config.yaml'));
  assert.equal(
    pod.volumes.find((v: Manifest) => v.name === 'config').configMap.name,
    configMap.metadata.name,
  );
  assert.deepEqual(deployment.spec.selector.matchLabels, service.spec.selector);
  assert.deepEqual(
    service.spec.ports.map((p: Manifest) => p.targetPort),
    ['proxy'],
  );
});

test('systemd: the unit files hold every line of the units docs/restarts.md shows', () => {
  const docs = fs.readFileSync(path.join(repo, 'docs/restarts.md'), 'utf8');
  const blocks = [...docs.matchAll(/```ini\n# \/etc\/systemd\/system\/(\S+)\n([\s\S]*?)```/g)];
  assert.deepEqual(blocks.map((b) => b[1]).sort(), ['oxy.service', 'oxy.socket']);
  for (const [, name, body] of blocks) {
    const unit = deploy(`systemd/${name}`).split('\n');
    for (const line of body!.split('\n')) {
      if (line.trim() === '' || line.startsWith('#')) continue;
      assert.ok(unit.includes(line), `deploy/systemd/${name} lacks "${line}"`);
    }
  }
});

test('Grafana: every series and label the dashboard queries exists in a running Oxy /metrics', async () => {
  const dashboard = JSON.parse(deploy('grafana/oxy-dashboard.json'));
  const exprs: string[] = dashboard.panels.flatMap((p: Manifest) => p.targets.map((t: Manifest) => t.expr));
  assert.ok(exprs.length >= 10);

  const upstream = await startHttpUpstream({ '/': { body: 'metrics' } });
  after(() => upstream.close());
  const config = path.join(tmp, 'metrics.yaml');
  fs.writeFileSync(
    config,
    [
      'endpoints:',
      '  main:',
      '    addr: "127.0.0.1:0"',
      'egress:',
      '  blocked_cidrs: []',
      'restart:',
      '  enabled: false',
      'telemetry:',
      '  logging:',
      '    output: stderr',
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  after(() => child.kill('SIGKILL'));
  let log = '';
  const [proxy, telemetry] = await new Promise<[string, string]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${log}`)), 30_000);
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
      const e = /endpoint listening.*addr=(\S+)/.exec(log);
      const t = /telemetry server listening addr=(\S+)/.exec(log);
      if (e && t && /\bready\b/.test(log)) {
        clearTimeout(timer);
        resolve([e[1]!, t[1]!]);
      }
    });
  });
  // One forwarded request and one tunnel, so that labelled series have samples.
  assert.equal((await curl(['-s', '-x', `http://${proxy}`, `${upstream.origin}/`])).stdout, 'metrics');
  assert.equal((await curl(['-s', '-p', '-x', `http://${proxy}`, `${upstream.origin}/`])).stdout, 'metrics');
  // A tunnel is counted when it ends, which the proxy hears of after curl has gone.
  let text = '';
  for (const until = performance.now() + 5000; performance.now() < until; ) {
    text = await (await fetch(`${telemetry}/metrics`)).text();
    if (/^oxy_tunnel_bytes_total\{/m.test(text)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const labels = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? /.exec(line);
    if (m === null) continue;
    const set = labels.get(m[1]!) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="/g)) set.add(l[1]!);
    labels.set(m[1]!, set);
  }
  for (const expr of exprs) {
    const series = [...expr.matchAll(/\b((?:oxy|process|nodejs)_\w+)\{/g)].map((m) => m[1]!);
    assert.ok(series.length > 0, expr);
    for (const name of series) {
      assert.ok(labels.has(name), `${name} (in ${expr}) is not in /metrics`);
      for (const by of expr.matchAll(/by \(([\w, ]+)\)/g)) {
        for (const label of by[1]!.split(/,\s*/)) {
          if (label === 'instance' || label === 'job') continue; // added by Prometheus at scrape
          assert.ok(labels.get(name)!.has(label), `${name} has no label "${label}" (${expr})`);
        }
      }
    }
  }
});
