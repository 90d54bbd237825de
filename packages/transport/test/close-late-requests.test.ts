// close() of a createMtlsServer server answers the requests that come while
// it runs instead of resetting their connections. It destroyed every
// connection at once (fastify's forceCloseConnections: true), so a request
// the client had fully written, on a connection handshaken just before, was
// reset unread: the client could not tell whether anything ran, and a call
// that is not idempotent (A2A SendMessage) could not be retried, though
// nothing had run (seen at a SecureAgent's SIGTERM under load). Now: 503 with
// `connection: close` on HTTP/1.1 (on an HTTP/2 server's HTTP/1.1 fallback
// too), a GOAWAY and REFUSED_STREAM on HTTP/2; idle keep-alive connections
// still close at once, requests in progress end with their answer, and what
// is still open after CLOSE_GRACE_MS is cut. Real mTLS on loopback, dev-CA
// SVIDs; HTTP/1.1 is spoken over a raw TLS socket to see every byte.
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import * as http2 from 'node:http2';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { CLOSE_GRACE_MS, createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

/** "At once": well under the grace, which would otherwise be what ended it. */
const PROMPT_MS = CLOSE_GRACE_MS / 2;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  td = await makeTd('late.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A server with `/ok`, and `/held`, which answers once the test releases it; counts the routes run. */
async function startServer(httpVersion: 'http1.1' | 'http2') {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let entered!: () => void;
  const inHandler = new Promise<void>((r) => (entered = r));
  let routed = 0;
  const app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { httpVersion },
  });
  app.get('/ok', async () => {
    routed++;
    return { ok: true };
  });
  app.get('/held', async () => {
    routed++;
    entered();
    await released;
    return { held: true };
  });
  // A stream (as SSE): its headers and first bytes out at once, its end once released.
  app.get('/stream', (_req, reply) => {
    routed++;
    reply.hijack();
    // Asked for over HTTP/1.1 only.
    const res = reply.raw as ServerResponse;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first;');
    entered();
    void released.then(() => res.end('last;'));
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(release, () => app.close());
  return { app, port: portOf(app.server), release, inHandler, routed: () => routed };
}

/** close() begun: resolves with how long it took, once the server has stopped listening. */
async function beginClose(app: MtlsFastifyInstance) {
  const t0 = Date.now();
  const closed = app.close().then(() => Date.now() - t0);
  while (app.server.listening) await sleep(1);
  return { closed, since: () => Date.now() - t0 };
}

/** What a raw connection saw by its close: every byte, and the socket error if any (a reset). */
interface Seen {
  text: string;
  error: string | undefined;
}

/**
 * An HTTP/1.1 mTLS connection from the test's client, on a raw TLS socket,
 * once the client has completed its handshake (the server may not have yet:
 * with TLS 1.3 the client's last message is still on its way).
 */
async function connectRaw(port: number) {
  const svid = clientId.getX509Svid().toPem();
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    cert: svid.certChain,
    key: svid.privateKey,
    ca: td.ca.x509Bundle.toPem(),
    checkServerIdentity: () => undefined,
  });
  cleanups.push(() => socket.destroy());
  const seen: Seen = { text: '', error: undefined };
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (seen.text += d));
  socket.on('error', (e: NodeJS.ErrnoException) => (seen.error = e.code ?? e.message));
  const closed = once(socket, 'close').then(() => seen);
  await once(socket, 'secureConnect');
  const get = (path: string): void => void socket.write(`GET ${path} HTTP/1.1\r\nhost: a\r\n\r\n`);
  return { socket, seen, closed, get };
}

/** The responses in `text`: status, headers (lower-case names) and body, by content-length. */
function responses(text: string): { status: number; headers: Record<string, string>; body: string }[] {
  const out = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const [statusLine = '', ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines)
      headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    const length = Number(headers['content-length'] ?? 0);
    const body = rest.slice(end + 4, end + 4 + length);
    if (body.length < length) return out;
    out.push({ status: Number(statusLine.split(' ')[1]), headers, body });
    rest = rest.slice(end + 4 + length);
  }
}

/**
 * A loopback relay to `target` that passes the client's first bytes (its
 * ClientHello) and holds the rest until `release()`: the client completes
 * its TLS 1.3 handshake and sends its request, while the server's handshake
 * waits for the client's last message.
 */
async function holdingRelay(target: number) {
  const held: Buffer[] = [];
  let upstream: Socket | undefined;
  let holding = true;
  const relay = createServer((client) => {
    const up = connect(target, '127.0.0.1');
    upstream = up;
    let first = true;
    client.on('data', (d: Buffer) => {
      if (first || !holding) up.write(d);
      else held.push(d);
      first = false;
    });
    up.on('data', (d: Buffer) => client.write(d));
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    for (const s of [client, up]) {
      s.on('error', () => undefined);
      s.on('close', end);
    }
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  cleanups.push(
    () => new Promise<void>((r) => relay.close(() => r())),
    () => upstream?.destroy(),
  );
  return {
    port: (relay.address() as AddressInfo).port,
    release: (): void => {
      holding = false;
      for (const d of held.splice(0)) upstream?.write(d);
    },
  };
}

async function untilAnswered(seen: Seen, count = 1): Promise<void> {
  while (responses(seen.text).length < count) await sleep(2);
}

// HTTP/1.1 on either server kind: the HTTP/2 server serves HTTP/1.1 callers too (ALPN fallback).
describe.each(['http1.1', 'http2'] as const)('createMtlsServer (%s) close(), HTTP/1.1 connections', (v) => {
  /** The answer a request written after close() began got on `conn`, which the server closed after it. */
  async function lateAnswer(conn: Awaited<ReturnType<typeof connectRaw>>) {
    const seen = await conn.closed;
    // No reset, and exactly one answer.
    expect(seen.error).toBeUndefined();
    const all = responses(seen.text);
    expect(all).toHaveLength(1);
    return all[0];
  }

  it('answers a request written after close() began on a handshaken connection: 503, connection: close, no reset', async () => {
    const { app, port, routed } = await startServer(v);
    const handshaken = once(app.server, 'secureConnection');
    const conn = await connectRaw(port);
    await handshaken;
    const { closed } = await beginClose(app);

    conn.get('/ok');
    const answer = await lateAnswer(conn);
    expect(answer?.status).toBe(503);
    expect(answer?.headers.connection).toBe('close');
    // Nothing ran for it.
    expect(routed()).toBe(0);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('answers a request sent with the handshake the server had not completed when close() began: 503, no reset', async () => {
    const { app, port, routed } = await startServer(v);
    const relay = await holdingRelay(port);
    let serverHandshaken = false;
    app.server.once('secureConnection', () => (serverHandshaken = true));
    // The client is done with its handshake and writes its request; the server's waits for it.
    const conn = await connectRaw(relay.port);
    conn.get('/ok');
    const { closed } = await beginClose(app);
    expect(serverHandshaken).toBe(false);

    relay.release();
    const answer = await lateAnswer(conn);
    expect(answer?.status).toBe(503);
    expect(answer?.headers.connection).toBe('close');
    expect(routed()).toBe(0);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('closes an idle keep-alive connection at once', async () => {
    const { app, port } = await startServer(v);
    const conn = await connectRaw(port);
    conn.get('/ok');
    await untilAnswered(conn.seen);
    expect(responses(conn.seen.text)[0]?.headers.connection).toBe('keep-alive');

    const { closed, since } = await beginClose(app);
    const seen = await conn.closed;
    expect(since()).toBeLessThan(PROMPT_MS);
    expect(seen.error).toBeUndefined();
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('closes at once a connection that has sent nothing, not even a ClientHello', async () => {
    const { app, port } = await startServer(v);
    const accepted = once(app.server, 'connection');
    const socket = connect(port, '127.0.0.1');
    cleanups.push(() => socket.destroy());
    socket.on('error', () => undefined);
    const socketClosed = once(socket, 'close');
    await accepted;

    const { closed, since } = await beginClose(app);
    await socketClosed;
    expect(since()).toBeLessThan(PROMPT_MS);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('lets a request in progress end: answered with connection: close, then its connection closes and close() resolves', async () => {
    const { app, port, release, inHandler } = await startServer(v);
    const conn = await connectRaw(port);
    conn.get('/held');
    await inHandler;

    const { closed } = await beginClose(app);
    await sleep(100);
    release();
    const seen = await conn.closed;
    expect(seen.error).toBeUndefined();
    const [answer] = responses(seen.text);
    expect(answer?.status).toBe(200);
    expect(JSON.parse(answer?.body ?? '')).toEqual({ held: true });
    expect(answer?.headers.connection).toBe('close');
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('lets a stream in progress end, then closes its connection at once', async () => {
    const { app, port, release, inHandler } = await startServer(v);
    const conn = await connectRaw(port);
    conn.get('/stream');
    await inHandler;

    const { closed, since } = await beginClose(app);
    await sleep(100);
    release();
    const seen = await conn.closed;
    // Not left open until the client's keep-alive timeout (idleTimeoutMs) ends it.
    expect(since()).toBeLessThan(PROMPT_MS);
    expect(seen.error).toBeUndefined();
    expect(seen.text).toMatch(/^HTTP\/1\.1 200 /);
    // Both parts, and the chunked body's end.
    expect(seen.text).toMatch(/first;[\s\S]*last;[\s\S]*\r\n0\r\n\r\n$/);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('cuts what is still open after CLOSE_GRACE_MS: a connection sending nothing, a handler not ending', async () => {
    const { app, port, inHandler } = await startServer(v);
    const silent = await connectRaw(port);
    const stuck = await connectRaw(port);
    stuck.get('/held');
    await inHandler;
    // Its handshake never completes on the server's side.
    const relay = await holdingRelay(port);
    const unfinished = await connectRaw(relay.port);

    const { closed, since } = await beginClose(app);
    await Promise.all([silent.closed, stuck.closed, unfinished.closed]);
    expect(since()).toBeGreaterThanOrEqual(CLOSE_GRACE_MS - 50);
    expect(await closed).toBeLessThan(CLOSE_GRACE_MS + 1_000);
    expect(silent.seen.text).toBe('');
    expect(responses(stuck.seen.text)).toEqual([]);
  });
});

describe('createMtlsServer (http2) close(), HTTP/2 sessions', () => {
  /** A GET on `session`: its status and body, or the error that ended the stream. */
  function get(session: http2.ClientHttp2Session, path: string) {
    return new Promise<{ status?: number; body?: string; error?: string }>((resolve) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.request({ ':path': path });
      } catch (err) {
        // The client had read the GOAWAY already (Node 20, 22): nothing was sent.
        resolve({ error: (err as NodeJS.ErrnoException).code });
        return;
      }
      let status = 0;
      let body = '';
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => (body += d));
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) resolve({ error: 'REFUSED_STREAM' });
        // Node 24 fails a stream made after the GOAWAY was read this way, not by throwing.
        else resolve({ error: err.code ?? 'reset' });
      });
      stream.on('close', () => resolve({ status, body }));
    });
  }

  function connectH2(port: number): http2.ClientHttp2Session {
    const svid = clientId.getX509Svid().toPem();
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      cert: svid.certChain,
      key: svid.privateKey,
      ca: td.ca.x509Bundle.toPem(),
      checkServerIdentity: () => undefined,
    });
    session.on('error', () => undefined);
    cleanups.push(() => session.destroy());
    return session;
  }

  it('sends a GOAWAY: a stream in progress ends, one opened after is refused (REFUSED_STREAM), an idle session closes at once', async () => {
    const { app, port, release, inHandler, routed } = await startServer('http2');
    const idle = connectH2(port);
    expect((await get(idle, '/ok')).status).toBe(200);
    const busy = connectH2(port);
    const held = get(busy, '/held');
    await inHandler;
    const idleClosed = once(idle, 'close');

    const { closed, since } = await beginClose(app);
    const late = get(busy, '/ok');
    await idleClosed;
    expect(since()).toBeLessThan(PROMPT_MS);
    // Refused past the GOAWAY, or not sent at all if the client had read it: either way the client knows nothing ran.
    expect(['REFUSED_STREAM', 'ERR_HTTP2_GOAWAY_SESSION']).toContain((await late).error);
    release();
    expect(await held).toEqual({ status: 200, body: JSON.stringify({ held: true }) });
    expect(routed()).toBe(2);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });

  it('sends a GOAWAY at once on a connection whose handshake completes after close() began: its stream is refused', async () => {
    const { app, port, routed } = await startServer('http2');
    const relay = await holdingRelay(port);
    let serverHandshaken = false;
    app.server.once('secureConnection', () => (serverHandshaken = true));
    const session = connectH2(relay.port);
    await once(session, 'connect');
    const late = get(session, '/ok');
    const { closed } = await beginClose(app);
    expect(serverHandshaken).toBe(false);

    relay.release();
    expect(['REFUSED_STREAM', 'ERR_HTTP2_GOAWAY_SESSION']).toContain((await late).error);
    expect(routed()).toBe(0);
    expect(await closed).toBeLessThan(PROMPT_MS);
  });
});
