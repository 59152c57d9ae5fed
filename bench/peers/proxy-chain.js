// Peer: Apify's proxy-chain as a plain forward proxy (absolute-form HTTP and CONNECT), one process.
// Started by the benchmark harness as `node peers/proxy-chain.js PORT`.
import { Server } from 'proxy-chain';

const port = Number(process.argv[2]);
const server = new Server({ port, host: '127.0.0.1', verbose: false });
server.on('requestFailed', () => {}); // failures are counted by the load generator, not logged here
await server.listen();
process.on('SIGTERM', () => server.close(true, () => process.exit(0)));
