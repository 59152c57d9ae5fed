/** Runs the Proxy-Status example: `npx node examples/proxy-status/main.ts`. */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
