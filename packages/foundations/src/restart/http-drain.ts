/**
 * Draining HTTP servers politely: keep-alive clients are asked to leave instead of being
 * cut off.
 *
 * HTTP/1: every response written after draining starts (including those of requests in
 * flight whose headers are not sent yet) carries `Connection: close`, so the client opens
 * its next request on a new connection, which lands in the new process. Idle keep-alive
 * connections are *not* closed early: closing them races with a client that is sending
 * its next request at that moment (the pitfall measured in notes §5); Node's own
 * `keepAliveTimeout` or the drain deadline ends them.
 *
 * HTTP/2: each session is closed gracefully (`session.close()`: GOAWAY, then open streams
 * finish).
 */
import type http from 'node:http';
import type http2 from 'node:http2';

type AnyHttpServer = http.Server | http2.Http2Server | http2.Http2SecureServer;

/** Installs the tracking on `server` and returns the function that starts draining it. */
export function httpDrain(server: AnyHttpServer): () => void {
  let draining = false;
  const inFlight = new Set<http.ServerResponse>();
  const sessions = new Set<http2.ServerHttp2Session>();

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (req.httpVersionMajor >= 2) return; // HTTP/2 forbids Connection; GOAWAY covers it
    if (draining) res.setHeader('connection', 'close');
    else {
      inFlight.add(res);
      res.once('finish', () => inFlight.delete(res));
      res.once('close', () => inFlight.delete(res));
    }
  };
  // Prepended so it runs before the app's handler writes the head.
  (server as http.Server).prependListener('request', onRequest);
  (server as http2.Http2Server).on('session', (session: http2.ServerHttp2Session) => {
    if (draining) {
      session.close();
      return;
    }
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });

  return () => {
    if (draining) return;
    draining = true;
    for (const res of inFlight) if (!res.headersSent) res.setHeader('connection', 'close');
    inFlight.clear();
    for (const s of sessions) if (!s.closed) s.close();
    sessions.clear();
  };
}
