/**
 * Brings the machine to what the benchmark needs, idempotently: Debian packages (under the apt
 * lock other engineers share), the Node.js peers in bench/node_modules (under the npm lock, not
 * a workspace), the C load generator, and the upstream's files on tmpfs. A package that fails to
 * install makes its proxy "unavailable", never the whole run.
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from './procs.ts';

/** Debian packages of the tools the harness drives itself (not a proxy under test). */
export const TOOL_PACKAGES = ['wrk', 'curl', 'nginx-light', 'gcc', 'libc6-dev', 'libssl-dev'] as const;

async function installed(pkg: string): Promise<boolean> {
  const r = await runCommand('dpkg-query', ['-W', `-f=\${Status}`, pkg]);
  return r.stdout.includes('install ok installed');
}

/**
 * Installs the Debian packages that are missing; returns those that still are not there
 * afterwards (their proxies are marked unavailable).
 */
export async function ensureApt(pkgs: readonly string[], log: (s: string) => void): Promise<Set<string>> {
  const missing: string[] = [];
  for (const p of new Set(pkgs)) if (!(await installed(p))) missing.push(p);
  if (missing.length === 0) return new Set();
  log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const lock = '/tmp/apt.lock';
  await runCommand('flock', [lock, 'apt-get', 'update', '-qq'], { env, timeoutMs: 300000 });
  // One at a time, so a package that cannot install (trafficserver is heavy) does not stop the rest.
  for (const p of missing) {
    const r = await runCommand(
      'flock',
      [lock, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', p],
      {
        env,
        timeoutMs: 600000,
      },
    );
    if (r.code !== 0) log(`apt-get install ${p} failed: ${r.stderr.trim().split('\n').pop()}`);
  }
  const still = new Set<string>();
  for (const p of missing) if (!(await installed(p))) still.add(p);
  return still;
}

/** Installs bench/package.json's peers into bench/node_modules when they are not there. */
export async function ensureNpmPeers(root: string, log: (s: string) => void): Promise<boolean> {
  const bench = join(root, 'bench');
  if (
    existsSync(join(bench, 'node_modules/proxy-chain')) &&
    existsSync(join(bench, 'node_modules/http-proxy'))
  ) {
    return true;
  }
  log('installing the Node.js peers into bench/node_modules');
  const r = await runCommand(
    'flock',
    ['/tmp/npm.lock', 'npm', 'install', '--prefix', bench, '--no-audit', '--no-fund', '--no-save'],
    { timeoutMs: 300000 },
  );
  if (r.code !== 0) log(`npm install failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  return r.code === 0;
}

/** The header the C load tools (connload.c, tls-load.c) include: a change to it rebuilds both. */
export const LOAD_COMMON_HEADER = 'bench/tools/load-common.h';

/** True when `out` exists and is newer than every one of `sources`. */
export function builtSince(out: string, sources: readonly string[]): boolean {
  if (!existsSync(out)) return false;
  const built = statSync(out).mtimeMs;
  return sources.every((src) => built > statSync(src).mtimeMs);
}

/**
 * Compiles bench/tools/<name>.c into the work directory as `name` when the binary is older than
 * the source or the load tools' header; `libs` are linker flags. `why` is added to a build error.
 */
export async function buildTool(
  root: string,
  work: string,
  name: string,
  libs: readonly string[] = [],
  why = '',
): Promise<string> {
  const src = join(root, `bench/tools/${name}.c`);
  const out = join(work, name);
  if (builtSince(out, [src, join(root, LOAD_COMMON_HEADER)])) return out;
  const r = await runCommand('cc', ['-O2', '-Wall', '-o', out, src, ...libs]);
  if (r.code !== 0) throw new Error(`building ${name} failed${why}:\n${r.stderr}`);
  return out;
}

/** Compiles bench/tools/connload.c into the work directory when it or its header is newer. */
export function buildConnload(root: string, work: string): Promise<string> {
  return buildTool(root, work, 'connload');
}

/** The files the upstream serves, written once to tmpfs. */
export const FILES: Record<string, number> = {
  '1k': 1024,
  '2m': 2 * 2 ** 20,
  '10m': 10 * 2 ** 20,
  '256m': 256 * 2 ** 20,
  '1g': 2 ** 30,
};

/** Creates the upstream's document root on tmpfs; returns its path. */
export function ensureDocroot(): string {
  const dir = '/dev/shm/oxy-bench-www';
  mkdirSync(dir, { recursive: true });
  const chunk = Buffer.alloc(2 ** 20, 'x');
  for (const [name, size] of Object.entries(FILES)) {
    const path = join(dir, name);
    if (existsSync(path) && statSync(path).size === size) continue;
    if (size < chunk.length) {
      writeFileSync(path, chunk.subarray(0, size));
      continue;
    }
    const parts: Buffer[] = [];
    for (let i = 0; i < size / chunk.length; i++) parts.push(chunk);
    writeFileSync(path, Buffer.concat(parts));
  }
  return dir;
}

/** The version of each piece of software in the comparison, by asking it. */
export async function versions(root: string, node: string): Promise<Record<string, string>> {
  const probe = async (cmd: string, args: string[], re: RegExp): Promise<string> => {
    const r = await runCommand(cmd, args, { timeoutMs: 10000 });
    return re.exec(`${r.stdout}\n${r.stderr}`)?.[1]?.trim() ?? 'not installed';
  };
  const pkgVersion = async (dir: string): Promise<string> => {
    const { readFile } = await import('node:fs/promises');
    try {
      return (JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'not installed';
    }
  };
  let commit = 'unknown';
  const git = await runCommand('git', ['-C', root, 'rev-parse', '--short', 'HEAD']);
  if (git.code === 0) commit = git.stdout.trim();
  return {
    oxy: `${await pkgVersion(join(root, 'packages/oxy'))} (commit ${commit})`,
    'Node.js (oxy, proxy-chain, http-proxy, h2 client)': await probe(node, ['--version'], /v(\S+)/),
    squid: await probe('squid', ['-v'], /Version (\S+)/),
    tinyproxy: await probe('tinyproxy', ['-v'], /tinyproxy (\S+)/),
    trafficserver: await probe('traffic_server', ['--version'], /Traffic Server (\S+)/),
    nginx: await probe('nginx', ['-v'], /nginx\/(\S+)/),
    haproxy: await probe('haproxy', ['-v'], /version (\S+)/),
    'proxy-chain': await pkgVersion(join(root, 'bench/node_modules/proxy-chain')),
    'http-proxy': await pkgVersion(join(root, 'bench/node_modules/http-proxy')),
    wrk: await probe('wrk', ['-v'], /wrk (\S+)/),
    curl: await probe('curl', ['-V'], /curl (\S+)/),
  };
}
