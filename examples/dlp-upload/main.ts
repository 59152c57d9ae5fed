/** Runs the DLP example: `npx node examples/dlp-upload/main.ts` (patterns under `app:` in a `-c` file). */
import { bootstrap } from 'oxy';
import { app } from './app.ts';

await bootstrap(app);
