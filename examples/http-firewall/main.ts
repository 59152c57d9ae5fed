/** Runs the firewall example: `npx node examples/http-firewall/main.ts` (rules under `app:` in a `-c` file). */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
