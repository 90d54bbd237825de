// Fault tests: killed and restarted servers, GOAWAY, idle closes, breaker and retry limits.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { fetch as undiciFetch, request as undiciRequest } from 'undici';
import { authorizeId } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import {
  CircuitOpenError,
  CircuitState,
  type CircuitBreaker,
  SecureChannel,
  createMtlsServerOptions,
  type TransportConfigInput,
} from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  A = await makeTd('a.test');
  serverId = await provider(A, '/server');
  clientId = await provider(A, '/client');
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

const fastRetry = { retries: 2, minDelayMs: 5, maxDelayMs: 20 };

function channel(config: TransportConfigInput = {}) {
  const ch = new SecureChannel(clientId, serverId.id, { retry: fastRetry, ...config });
  closers.push(() => ch.destroy());
  return ch;
}

/** A node https mTLS server whose handler is given; counts requests per path. */
async function httpsServer(
  handler: (req: IncomingMessage, res: ServerResponse, n: number) => void,
  port = 0,
) {
  let n = 0;
  const server = https.createServer(createMtlsServerOptions(serverId), (req, res) => handler(req, res, ++n));
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  closers.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { server, url: `https://127.0.0.1:${portOf(server)}`, hits: () => n };
}

// A separate process serving mTLS, so it can really be killed (SIGKILL) mid-request.
const CHILD_SERVER = `
const https = require('node:https');
const opts = JSON.parse(process.env.WEAVE_TLS);
let n = 0;
const server = https.createServer(opts, (req, res) => {
  n++;
  if (req.url === '/hang') { process.stdout.write('hanging\\n'); return; }
  res.end(JSON.stringify({ n, pid: process.pid }));
});
server.listen(Number(process.env.WEAVE_PORT || 0), '127.0.0.1', () => process.stdout.write('port ' + server.address().port + '\\n'));
`;

async function childServer(port = 0): Promise<{ proc: ChildProcess; port: number; lines: string[] }> {
  const proc = spawn(process.execPath, ['-e', CHILD_SERVER], {
    env: {
      ...process.env,
      WEAVE_TLS: JSON.stringify(createMtlsServerOptions(serverId)),
      WEAVE_PORT: String(port),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  closers.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
  });
  const lines: string[] = [];
  let buf = '';
  const got = new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        const m = /^port (\d+)$/.exec(line);
        if (m) resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => reject(new Error(`child server exited with ${code}`)));
  });
  return { proc, port: await got, lines };
}

describe('server killed and restarted', () => {
  it('a request in flight when the server is killed fails promptly; after a restart on the same port the channel recovers', async () => {
    const first = await childServer();
    const ch = channel();
    const url = `https://127.0.0.1:${first.port}`;
    const ok = await ch.get(`${url}/`);
    expect(ok.statusCode).toBe(200);
    await ok.body.dump();

    // A POST hangs in the server, which is then killed: not idempotent, so it fails (no retry).
    const pending = ch.post(`${url}/hang`, { body: '{}' }).catch((e: unknown) => e);
    await vi.waitFor(() => expect(first.lines).toContain('hanging'));
    first.proc.kill('SIGKILL');
    await once(first.proc, 'exit');
    const err = await pending;
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toMatch(/UND_ERR_SOCKET|ECONNRESET/);

    // While down: connect-phase failures (nothing sent) are retried, then surface.
    await expect(ch.get(`${url}/`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    // Restarted on the same port: the same channel works again.
    await childServer(first.port);
    const again = await ch.get(`${url}/`);
    expect(again.statusCode).toBe(200);
    expect(((await again.body.json()) as { n: number }).n).toBe(1);
  });

  it('a GET whose connection dies mid-request is retried and succeeds', async () => {
    const srv = await httpsServer((req, res, n) => {
      if (n === 1) {
        req.socket.destroy(); // the server "dies" on this connection after receiving the request
        return;
      }
      res.end('second try');
    });
    const res = await channel().get(`${srv.url}/`);
    expect(await res.body.text()).toBe('second try');
    expect(srv.hits()).toBe(2);
  });
});

describe('retry limits', () => {
  it('stops at its limit', async () => {
    const srv = await httpsServer((req) => req.socket.destroy());
    const err = await channel()
      .get(`${srv.url}/`)
      .catch((e: unknown) => e);
    expect((err as { code?: string }).code).toMatch(/UND_ERR_SOCKET|ECONNRESET/);
    expect(srv.hits()).toBe(1 + fastRetry.retries);
  });

  it('never retries a non-idempotent request that reached the server (request and fetch paths)', async () => {
    const srv = await httpsServer((req) => req.socket.destroy());
    const ch = channel();
    await expect(ch.post(`${srv.url}/`, { body: 'pay 10 €' })).rejects.toBeDefined();
    expect(srv.hits()).toBe(1);
    await expect(
      undiciFetch(`${srv.url}/`, { method: 'POST', body: 'pay 10 €', dispatcher: ch }),
    ).rejects.toBeDefined();
    expect(srv.hits()).toBe(2);
  });

  it('retries a POST whose connection could not even be opened (nothing was sent)', async () => {
    // Reserve a port, then free it: connections are refused until the server appears.
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = portOf(probe);
    await new Promise((r) => probe.close(r));
    const ch = channel({ retry: { retries: 6, minDelayMs: 100, maxDelayMs: 200, factor: 1 } });
    const attempt = ch.post(`https://127.0.0.1:${port}/`, { body: 'once' });
    let seen = 0;
    const srv = await httpsServer((req, res) => {
      seen++;
      req.resume();
      res.end('done');
    }, port);
    const res = await attempt;
    expect(await res.body.text()).toBe('done');
    expect(seen).toBe(1);
    expect(srv.hits()).toBe(1);
  });
});

describe('HTTP/2 GOAWAY and idle closes', () => {
  it('a GOAWAY does not fail a GET (request and fetch paths); the handler ran again on a new session', async () => {
    let hits = 0;
    const server = http2.createSecureServer(createMtlsServerOptions(serverId));
    server.on('stream', (stream) => {
      stream.on('error', () => undefined); // the refused stream errors on the server side too
      hits++;
      if (hits % 2 === 1) {
        // Graceful shutdown of this session before answering: the client must move on.
        stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      stream.respond({ ':status': 200 });
      stream.end('after goaway');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on('session', (s) => sessions.add(s));
    closers.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sessions) s.destroy();
          server.close(() => r());
        }),
    );
    const url = `https://127.0.0.1:${portOf(server)}/`;
    const ch = channel({ httpVersion: 'http2' });
    const res = await ch.get(url);
    expect(await res.body.text()).toBe('after goaway');
    expect(hits).toBe(2);
    const f = await undiciFetch(url, { dispatcher: ch });
    expect(await f.text()).toBe('after goaway');
    expect(hits).toBe(4);
    expect(sessions.size).toBeGreaterThanOrEqual(3);
  });

  for (const httpVersion of ['http1.1', 'http2'] as const) {
    it(`${httpVersion}: the server closing idle connections does not fail the next requests`, async () => {
      let hits = 0;
      const app = createMtlsServer({
        identity: serverId,
        authorize: authorizeId(clientId.id),
        config: { httpVersion, idleTimeoutMs: 150 },
      });
      app.get('/', async () => ({ n: ++hits }));
      await app.listen({ port: 0, host: '127.0.0.1' });
      closers.push(() => app.close());
      const url = `https://127.0.0.1:${portOf(app.server)}/`;
      const ch = channel({ httpVersion, idleTimeoutMs: 60_000 });
      for (let i = 1; i <= 3; i++) {
        const res = await ch.get(url);
        expect(await res.body.json()).toEqual({ n: i });
        await new Promise((r) => setTimeout(r, 400)); // longer than the server's idle timeout
      }
      expect(hits).toBe(3);
    });
  }
});

/** A peer that is down (a TCP server dropping every connection) and a channel to it that opens after 3 failures. */
async function downPeer() {
  let n = 0;
  const refuser = net.createServer((s) => {
    n++;
    s.destroy();
  });
  refuser.listen(0, '127.0.0.1');
  await once(refuser, 'listening');
  const port = portOf(refuser);
  const ch = channel({
    retry: { retries: 0 },
    circuitBreaker: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeoutMs: 300 },
  });
  return { refuser, port, url: `https://127.0.0.1:${port}/`, connections: () => n, ch };
}

describe('circuit breaker on a channel', () => {
  it('opens after the threshold, refuses without connecting, half-opens after its timeout and closes on success', async () => {
    const { refuser, port, url, connections, ch } = await downPeer();
    for (let i = 0; i < 3; i++) await expect(ch.get(url)).rejects.toBeDefined();
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Open);
    const before = connections();
    await expect(ch.get(url)).rejects.toBeInstanceOf(CircuitOpenError);
    expect(connections()).toBe(before); // refused locally

    // The peer comes back on the same port.
    await new Promise((r) => refuser.close(r));
    await vi.waitFor(() => expect(ch.circuitBreaker?.state).toBe(CircuitState.HalfOpen), { timeout: 5_000 });
    await httpsServer((_req, res) => res.end('healthy'), port);
    const res = await ch.get(url);
    expect(await res.body.text()).toBe('healthy');
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Closed);
  });

  it('dispatch() (undici.request, fetch, the A2A client) meets the same breaker: opens, refuses without connecting, closes', async () => {
    const { refuser, port, url, connections, ch } = await downPeer();
    for (let i = 0; i < 3; i++) await expect(undiciRequest(url, { dispatcher: ch })).rejects.toBeDefined();
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Open);
    const before = connections();
    await expect(undiciRequest(url, { dispatcher: ch })).rejects.toBeInstanceOf(CircuitOpenError);
    const viaFetch = await undiciFetch(url, { dispatcher: ch }).catch((e: unknown) => e);
    expect((viaFetch as Error).cause).toBeInstanceOf(CircuitOpenError);
    expect(connections()).toBe(before); // refused locally

    await new Promise((r) => refuser.close(r));
    await vi.waitFor(() => expect(ch.circuitBreaker?.state).toBe(CircuitState.HalfOpen), { timeout: 5_000 });
    await httpsServer((_req, res) => res.end('healthy'), port);
    const res = await undiciRequest(url, { dispatcher: ch });
    expect(await res.body.text()).toBe('healthy');
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Closed);
  });

  it("the caller's own aborts on the dispatch path do not count against the peer", async () => {
    const { url } = await httpsServer(() => undefined); // never answers
    const ch = channel({
      retry: { retries: 0 },
      circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    for (let i = 0; i < 4; i++) {
      await expect(
        undiciRequest(url, { dispatcher: ch, signal: AbortSignal.timeout(100) }),
      ).rejects.toBeDefined();
    }
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Closed);
    expect(ch.circuitBreaker?.metrics().failures).toBe(0);
  });

  it('a half-open trial the caller aborts does not close the circuit: it opens again, on both paths', async () => {
    const { url } = await httpsServer(() => undefined); // never answers
    for (const path of ['request()', 'dispatch'] as const) {
      const ch = channel({
        retry: { retries: 0 },
        circuitBreaker: { volumeThreshold: 1, errorThresholdPercentage: 50, resetTimeoutMs: 200 },
      });
      const breaker = ch.circuitBreaker as CircuitBreaker;
      // Open it: one failed call through the channel's own breaker is enough (volumeThreshold 1).
      await expect(breaker.execute(() => Promise.reject(new Error('peer down')))).rejects.toThrow(
        'peer down',
      );
      expect(breaker.state).toBe(CircuitState.Open);
      await expect.poll(() => breaker.state, { timeout: 5_000 }).toBe(CircuitState.HalfOpen);
      const trial =
        path === 'request()'
          ? ch.get(url, { signal: AbortSignal.timeout(100) })
          : undiciRequest(url, { dispatcher: ch, signal: AbortSignal.timeout(100) });
      await expect(trial).rejects.toBeDefined();
      // The peer never answered the trial: not shown healthy, the circuit is open again.
      expect(breaker.state, path).toBe(CircuitState.Open);
    }
  });

  it("the caller's own aborts on the request() path do not count against the peer, and reach it as they were", async () => {
    const { url } = await httpsServer(() => undefined); // never answers
    const ch = channel({
      retry: { retries: 0 },
      circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    for (let i = 0; i < 2; i++) {
      const err = await ch.get(url, { signal: AbortSignal.timeout(100) }).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'TimeoutError' });
      const c = new AbortController();
      setTimeout(() => c.abort(new Error('the caller gave up')), 50);
      await expect(ch.get(url, { signal: c.signal })).rejects.toThrow('the caller gave up');
    }
    expect(ch.circuitBreaker?.state).toBe(CircuitState.Closed);
    expect(ch.circuitBreaker?.metrics().failures).toBe(0);
  });
});
