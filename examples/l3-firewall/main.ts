/** Runs the layer-3 firewall example: `npx node examples/l3-firewall/main.ts -c examples/l3-firewall/config.yaml`. */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
