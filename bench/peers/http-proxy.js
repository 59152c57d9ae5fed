// Peer: a forward proxy on the `http-proxy` library, the way most Node.js forward proxies are
// written: absolute-form requests through `proxy.web()` with an upstream keep-alive agent, CONNECT
// by piping two sockets. Started by the harness as `node peers/http-proxy.js PORT`.
import http from 'node:http';
import net from 'node:net';
import httpProxy from 'http-proxy';

const port = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ agent, xfwd: false });
proxy.on('error', (_err, _req, res) => {
  if (res instanceof http.ServerResponse && !res.headersSent) res.writeHead(502).end();
  else res.destroy();
});

const server = http.createServer((req, res) => {
  let target;
  try {
    target = new URL(req.url).origin; // absolute-form: the target is in the request line
  } catch {
    res.writeHead(400).end();
    return;
  }
  proxy.web(req, res, { target, prependPath: false, ignorePath: false });
});

server.on('connect', (req, client, head) => {
  const [host, p] = splitHostPort(req.url);
  const upstream = net.connect({ host, port: p }, () => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstream.on('error', () => client.destroy());
  client.on('error', () => upstream.destroy());
});

function splitHostPort(authority) {
  const i = authority.lastIndexOf(':');
  return [authority.slice(0, i).replace(/^\[|\]$/g, ''), Number(authority.slice(i + 1))];
}

server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
