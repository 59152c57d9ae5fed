/**
 * A child process for crash.test.ts: sets up JSON logs on stderr and the crash handler, then
 * fails the way argv[2] says, inside a telemetry context with fields.
 */
import { TelemetryContext } from '../context.ts';
import { installCrashHandler } from '../crash.ts';
import { initTelemetry } from '../index.ts';
import { configureLogging } from '../log/logger.ts';
import { defaultTelemetrySettings } from '../settings-types.ts';

const mode = process.argv[2];
if (mode === 'init') {
  // The production path: initTelemetry installs the crash handler itself.
  const settings = defaultTelemetrySettings();
  settings.logging = { ...settings.logging, output: 'stderr', format: 'json' };
  settings.server.enabled = false;
  await initTelemetry({ name: 'crashy', version: '0', description: 'crash test' }, settings);
} else {
  configureLogging({ ...defaultTelemetrySettings().logging, output: 'stderr', format: 'json' }, 'crashy');
  installCrashHandler({
    onCrash:
      mode === 'hook'
        ? async (r) => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            process.stdout.write(
              `${JSON.stringify({ hook: r.kind, fields: r.fields, message: (r.error as Error).message })}\n`,
            );
          }
        : mode === 'hanging-hook'
          ? () => new Promise(() => undefined)
          : undefined,
    hookTimeout: 300,
  });
}

const conn = TelemetryContext.current().withForkedLog().addFields({ conn_id: 42 });
conn.apply(() => {
  const req = TelemetryContext.current().withForkedLog().addFields({ url: '/crash' });
  req.apply(() => {
    switch (mode) {
      case 'exception':
      case 'init':
      case 'hook':
      case 'hanging-hook':
        setTimeout(() => {
          throw new Error('timer exploded');
        }, 5);
        break;
      case 'rejection':
        void (async () => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          throw new Error('async exploded');
        })();
        break;
      case 'sync':
        throw new Error('sync exploded');
    }
  });
});
setTimeout(() => undefined, 10_000); // would keep the process alive if the handler did not exit
