/**
 * Shared set-up of the integration tests: an app started on an ephemeral loopback port with
 * loopback egress allowed (the default `blocked_cidrs` refuses 127.0.0.0/8, where the test
 * upstreams live), telemetry kept quiet, and curl run as a real client.
 */
import { execFile } from 'node:child_process';
import { after } from 'node:test';
import type { OxyApp } from '../src/app.ts';
import { defineApp } from '../src/app.ts';
import type { Hooks } from '../src/hooks/run.ts';
import { type RunningProxy, type StartOptions, startOxy } from '../src/proxy.ts';

/** Settings every test starts from (merged under the test's own). */
export const TEST_SETTINGS = {
  telemetry: { server: { enabled: false }, logging: { verbosity: 'ERROR' }, tracing: { enabled: false } },
  endpoints: { main: { addr: '127.0.0.1:0' } },
  egress: { blocked_cidrs: [] },
  restart: { enabled: false },
};

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      typeof v === 'object' && v !== null && !Array.isArray(v) && typeof prev === 'object' && prev !== null
        ? merge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** Starts `app` (or an app returning `hooks`) for one test file; closed in `after()`. */
export async function startTestProxy(
  appOrHooks: OxyApp<never, never> | OxyApp | Hooks = {},
  settings: Record<string, unknown> = {},
  options: StartOptions = {},
): Promise<RunningProxy & { url: string }> {
  const app =
    'definition' in appOrHooks
      ? appOrHooks
      : defineApp({ name: 'test', version: '0', description: 'test app', start: () => appOrHooks as Hooks });
  const proxy = await startOxy(app, merge(TEST_SETTINGS, settings), options);
  after(() => proxy.close());
  const { host, port } = proxy.address();
  return Object.assign(proxy, { url: `http://${host}:${port}` });
}

/** Runs curl with `args`; resolves with its exit code, stdout and stderr (never rejects). */
export function curl(
  args: string[],
  timeoutMs = 10_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(timeoutMs / 1000), ...args], (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}
