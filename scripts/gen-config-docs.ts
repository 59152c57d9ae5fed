/** Writes docs/configuration.md from Oxy's settings schema: `npx node scripts/gen-config-docs.ts`. */
import fs from 'node:fs';
import { configurationMarkdown } from '../packages/oxy/src/config-docs.ts';

fs.writeFileSync(new URL('../docs/configuration.md', import.meta.url), configurationMarkdown());
