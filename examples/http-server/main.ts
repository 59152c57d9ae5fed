#!/usr/bin/env node
/**
 * Foundations example HTTP server: `node main.ts --help`. Endpoints and their routes come
 * from settings (`--generate -` prints them); each connection and request is logged, traced
 * and counted. It runs until SIGINT or SIGTERM, then lets requests in flight finish.
 */
import { once } from 'node:events';
import { runService } from 'foundations/cli';
import { formatListenAddr } from 'foundations/settings';
import { log } from 'foundations/telemetry';
import { type Endpoint, startEndpoint } from './server.ts';
import { HttpServerSettings } from './settings.ts';

await runService({
  info: {
    name: 'http_server',
    version: '0.1.0',
    description: 'Foundations example HTTP server: endpoints and routes from settings.',
  },
  settings: HttpServerSettings,
  async main({ settings, telemetry }) {
    const server = telemetry?.server;
    if (server) log.info('telemetry server started', { addr: formatListenAddr(server.address()) });
    const endpoints: Endpoint[] = [];
    try {
      for (const [name, endpoint] of Object.entries(settings.endpoints)) {
        endpoints.push(await startEndpoint(name, endpoint));
      }
      const signal = await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')]);
      log.info('shutting down', { signal: String(signal[0] ?? '') });
    } finally {
      await Promise.all(endpoints.map((e) => e.close()));
    }
  },
});
