/**
 * Runs the fixture service (`service.ts`) as a child process in a temporary working directory,
 * for the CLI tests: `file` writes a config there, `run` starts the service with arguments and
 * resolves with its exit code and output (killed after 20 s).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('./service.ts', import.meta.url));

/** A service runner in a fresh directory `prefix…`, removed after the test file. */
export function serviceRunner(prefix: string): {
  readonly dir: string;
  file(name: string, text: string): string;
  run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return {
    dir,
    /** Writes `name` in the children's working directory and returns the name. */
    file(name, text) {
      writeFileSync(join(dir, name), text);
      return name;
    },
    /** Runs the fixture service with `args`; resolves with its exit code and output. */
    run(...args) {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [FIXTURE, ...args], {
          cwd: dir,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
    },
  };
}
