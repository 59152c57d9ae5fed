/**
 * The app of S9 (`npm run bench -- S9`): Oxy's default forward proxy plus a body hook that counts
 * the bytes of every response body (observes only: the body, its length and framing pass
 * unchanged). `OXY_BENCH_BODY=head` installs a response-head hook only instead: the same
 * forwarding path without a body stage, to tell the stage's cost from the path's. The filter
 * takes its chunks lent (`chunks: 'lent'`, it keeps none); `OXY_BENCH_CHUNKS=owned` measures it
 * taking them owned.
 */
import { bootstrap, defineApp, type Hooks } from 'oxy';

let counted = 0;
const count: Hooks = {
  httpBody: {
    getResponseBodyFilter: () => ({
      // It keeps no chunk: the proxy may read the next one into the same memory.
      chunks: process.env.OXY_BENCH_CHUNKS === 'owned' ? 'owned' : 'lent',
      onChunk(chunk) {
        counted += chunk.length;
      },
    }),
  },
};
const head: Hooks = { httpRequest: { handleResponse: () => undefined } };

const app = defineApp({
  name: 'oxy-bench-body',
  version: '0.0.0',
  description: 'counts response body bytes (S9)',
  start: () => (process.env.OXY_BENCH_BODY === 'head' ? head : count),
});

process.once('beforeExit', () => {
  if (counted > 0) process.stderr.write(`body bytes counted: ${counted}\n`);
});
await bootstrap(app);
