/**
 * The DLP example over forwarded HTTP: clean uploads pass unchanged, an upload with a protected
 * pattern is answered 403 and never reaches the origin whole, even when the pattern is split
 * across two writes (two chunks at the proxy), over HTTP/1.1 (curl, Node) and HTTP/2.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { curl, startApp } from 'oxy/testing';
import { app, dlpFilter } from './app.ts';

/** An origin that answers each upload with its size and sha256, and counts uploads it got whole. */
let whole = 0;
const origin = http.createServer((req, res) => {
  const hash = createHash('sha256');
  let bytes = 0;
  req.on('data', (c: Buffer) => {
    bytes += c.length;
    hash.update(c);
  });
  req.on('end', () => {
    whole++;
    res.end(`${bytes} ${hash.digest('hex')}`);
  });
});
origin.listen(0, '127.0.0.1');
await new Promise((r) => origin.once('listening', r));
const originUrl = `http://127.0.0.1:${(origin.address() as { port: number }).port}`;

const proxy = await startApp(app, { settings: { app: { patterns: ['Top-Secret', 'ACME-KEY-'] } } });
after(async () => {
  await proxy.stop();
  origin.close();
});

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

test('the matcher finds a pattern split across chunks, in any ASCII case', () => {
  const filter = dlpFilter([Buffer.from('top-secret')], 403);
  const chunks = ['x'.repeat(1000), 'data TOP-SE', 'cret more'];
  const verdicts = chunks.map((c) => filter.onChunk?.(Buffer.from(c)));
  assert.deepEqual(verdicts.slice(0, 2), [undefined, undefined]);
  assert.deepEqual(verdicts[2], {
    kind: 'stop',
    status: 403,
    reason: 'upload blocked: it contains a protected pattern',
  });
  // Split one byte from each end.
  const f2 = dlpFilter([Buffer.from('top-secret')], 403);
  assert.equal(f2.onChunk?.(Buffer.from('t')), undefined);
  assert.equal(f2.onChunk?.(Buffer.from('op-secre')), undefined);
  assert.deepEqual(f2.onChunk?.(Buffer.from('t')), {
    kind: 'stop',
    status: 403,
    reason: 'upload blocked: it contains a protected pattern',
  });
});

test('a clean upload passes unchanged (curl)', async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dlp-')), 'clean.bin');
  const body = Buffer.alloc(2 * 1024 * 1024, 'harmless data ');
  fs.writeFileSync(file, body);
  const r = await curl([
    '-x',
    `http://${proxy.address()}`,
    '--data-binary',
    `@${file}`,
    `${originUrl}/upload`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${body.length} ${sha(body)}`);
});

test('an upload with a pattern is 403 and the origin never gets it whole (curl)', async () => {
  const before = whole;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dlp-')), 'leak.bin');
  fs.writeFileSync(
    file,
    Buffer.concat([
      Buffer.alloc(512 * 1024, 'a'),
      Buffer.from('acme-key-123'),
      Buffer.alloc(512 * 1024, 'b'),
    ]),
  );
  const r = await curl([
    '-x',
    `http://${proxy.address()}`,
    '-w',
    ' %{http_code}',
    '--data-binary',
    `@${file}`,
    `${originUrl}/upload`,
  ]);
  assert.match(r.stdout, /upload blocked: it contains a protected pattern\n 403$/);
  assert.equal(whole, before);
});

/** POSTs `parts` through the proxy over HTTP/1.1, pausing between them so each is its own chunk. */
function postInParts(parts: readonly string[]): Promise<{ status: number; body: string }> {
  const [host, port] = proxy.address().split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host,
      port: Number(port),
      method: 'POST',
      path: `${originUrl}/upload`,
      agent: false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    void (async () => {
      for (const p of parts) {
        if (req.destroyed) return;
        req.write(p);
        await new Promise((r) => setTimeout(r, 50));
      }
      req.end();
    })();
  });
}

test('a pattern straddling two writes is still blocked (HTTP/1.1)', async () => {
  const before = whole;
  const r = await postInParts(['first part Top-Se', 'cret second part', 'never sent whole']);
  assert.equal(r.status, 403);
  assert.equal(whole, before);
  const ok = await postInParts(['first part Top-Se', 'xret second part']);
  assert.equal(ok.status, 200);
});

test('a pattern straddling two DATA frames is blocked over HTTP/2, and the session goes on', async () => {
  const s = http2.connect(`http://${proxy.address()}`);
  s.on('error', () => {});
  try {
    const post = (parts: readonly string[]) =>
      new Promise<number>((resolve) => {
        const st = s.request({
          ':method': 'POST',
          ':scheme': 'http',
          ':authority': originUrl.slice(7),
          ':path': '/u',
        });
        st.on('error', () => {});
        let status = 0;
        st.on('response', (h) => {
          status = Number(h[':status']);
        });
        st.resume();
        // After a stop the server ends the stream early; Node's client needs the rest dropped.
        st.on('end', () => setImmediate(() => st.destroy()));
        st.on('close', () => resolve(status));
        void (async () => {
          for (const p of parts) {
            if (st.destroyed) return;
            st.write(p);
            await new Promise((r) => setTimeout(r, 50));
          }
          if (!st.destroyed) st.end();
        })();
      });
    assert.equal(await post(['abc ACME-K', 'EY-9 def']), 403);
    assert.equal(await post(['abc ACME-K', 'Ex-9 def']), 200);
  } finally {
    s.close();
  }
});
