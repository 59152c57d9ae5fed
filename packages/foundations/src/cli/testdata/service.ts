/**
 * A small service for the CLI tests: it runs the real `runService` in a child process. `main`
 * prints one JSON line (`main {...}`) with what it received, then behaves as `fail` says.
 */
import { FND_ERR, FoundationsError } from '../../errors.ts';
import { restartSettings } from '../../restart/index.ts';
import { s } from '../../settings/index.ts';
import { TelemetrySettings } from '../../telemetry/index.ts';
import { runService } from '../index.ts';

const Settings = s.object('Fixture settings.', {
  telemetry: TelemetrySettings,
  restart: restartSettings('cli-fixture-test'),
  greeting: s.str('What main prints.', 'hello'),
  upstream: s.socketAddr('Some address.', '127.0.0.1:8080'),
  fail: s.oneOf('How main ends: ok, user (a user error) or crash.', ['ok', 'user', 'crash'] as const, 'ok'),
});

await runService({
  info: { name: 'fixture', version: '1.2.3', description: 'A fixture service for CLI tests.' },
  settings: Settings,
  options: {
    shout: { type: 'boolean', short: 's', description: 'Print the greeting in capitals.' },
    tag: { type: 'string', multiple: true, valueName: 'TAG', description: 'A tag (repeatable).' },
    mode: { type: 'string', default: 'normal', description: 'A mode.' },
  },
  main({ settings, options, configFiles }) {
    const greeting = options.shout ? settings.greeting.toUpperCase() : settings.greeting;
    process.stdout.write(
      `main ${JSON.stringify({ greeting, upstream: settings.upstream, tags: options.tag, mode: options.mode, configFiles })}\n`,
    );
    if (settings.fail === 'user')
      throw new FoundationsError(FND_ERR.CLI, 'the app refused this', { userError: true });
    if (settings.fail === 'crash') throw new Error('boom');
  },
});
