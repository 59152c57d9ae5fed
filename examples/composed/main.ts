/** Runs the composed example: `npx node examples/composed/main.ts -c examples/composed/config.yaml`. */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
