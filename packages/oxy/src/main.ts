/**
 * Entry point of the `oxy` command (`npx oxy`, `npm start`): the default Oxy app, a forward
 * proxy with no hooks. With the default settings it listens on 127.0.0.1:8080 with the
 * telemetry server on; `oxy --generate -` prints every setting with its description.
 */
import { bootstrap, defineApp } from './app.ts';

// `oxy new NAME [--from DIR]` writes a starter app (scaffold.ts) instead of running the proxy.
if (process.argv[2] === 'new') {
  const { runNew } = await import('./scaffold-cli.ts');
  process.exit(runNew(process.argv.slice(3)));
}

const app = defineApp({
  name: 'oxy',
  version: '0.1.0',
  description: 'Oxy: a programmable forward proxy (HTTP/1.1 and HTTP/2: absolute-form, CONNECT, Upgrade)',
  start: () => ({}),
});

await bootstrap(app);
