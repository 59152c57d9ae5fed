/** Runs the PSK egress example: `npx node examples/psk-egress/main.ts -c examples/psk-egress/config.yaml`. */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
