/**
 * How the harness starts a proxy under test: its own world-writable directory, its config file
 * there, its process tracked by PID, and a wait until its port (TCP, or UDP) is bound. Shared by
 * the rows of proxies.ts and proxies-l4.ts.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startProcess, waitForPort, waitForUdpPort } from './procs.ts';
import type { BenchEnv, Running } from './proxies.ts';

/** What the harness starts besides the proxies under test: never pinned with them. */

/** Starts a proxy and waits for its port (TCP, or UDP with `udp`). */
export async function launch(
  env: BenchEnv,
  name: string,
  port: number,
  cmd: string,
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
  startMs = 15000,
  udp = false,
): Promise<Running> {
  const proc = startProcess(name, cmd, args, { logFile: join(dirFor(env, name), 'out.log'), env: extraEnv });
  if (udp) await waitForUdpPort(port, startMs, proc);
  else await waitForPort('127.0.0.1', port, startMs, proc);
  return { proc, addr: `127.0.0.1:${port}` };
}

/** A world-writable directory per proxy: some drop root and must still write their logs there. */
export function dirFor(env: BenchEnv, name: string): string {
  const dir = join(env.work, name);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o777);
  return dir;
}

/** Writes a proxy's config file into its directory; returns the path. */
export function conf(env: BenchEnv, name: string, file: string, text: string): string {
  const path = join(dirFor(env, name), file);
  writeFileSync(path, text);
  return path;
}

/** The top of every nginx config here: one worker in the foreground, files under `dir`. */
export function nginxMain(dir: string): string {
  return `user root;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log crit;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
`;
}
