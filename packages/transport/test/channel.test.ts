import { createServer } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fetch as undiciFetch, request as undiciRequest } from 'undici';
import { authorizeId, authorizeMemberOf } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel, TransportConfigError } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  td = await makeTd('a.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
});

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

async function startServer(httpVersion: 'http1.1' | 'http2' = 'http1.1') {
  let hits = 0;
  const app: MtlsFastifyInstance = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { httpVersion },
  });
  app.get('/whoami', async (req) => {
    hits++;
    return { peer: req.peer.toString(), http: req.raw.httpVersion };
  });
  app.post('/echo', async (req) => {
    hits++;
    return { got: req.body };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return { app, url: `https://127.0.0.1:${portOf(app.server)}`, hits: () => hits };
}

function channel(
  peer: ConstructorParameters<typeof SecureChannel>[1],
  config: ConstructorParameters<typeof SecureChannel>[2] = {},
) {
  const ch = new SecureChannel(clientId, peer, config);
  closers.push(() => ch.close());
  return ch;
}

describe('SecureChannel ↔ createMtlsServer', () => {
  for (const httpVersion of ['http1.1', 'http2'] as const) {
    it(`${httpVersion}: both sides see each other's SPIFFE ID`, async () => {
      const srv = await startServer(httpVersion);
      const ch = channel(serverId.id, { httpVersion });
      const peers: string[] = [];
      ch.onPeerVerified((e) => peers.push(e.peer.toString()));
      const res = await ch.get(`${srv.url}/whoami`);
      expect(res.statusCode).toBe(200);
      const body = (await res.body.json()) as { peer: string; http: string };
      expect(body.peer).toBe(clientId.id.toString());
      expect(body.http).toBe(httpVersion === 'http2' ? '2.0' : '1.1');
      expect(peers).toEqual([serverId.id.toString()]);

      const posted = await ch.post(`${srv.url}/echo`, {
        body: JSON.stringify({ x: 1 }),
        headers: { 'content-type': 'application/json' },
      });
      expect(await posted.body.json()).toEqual({ got: { x: 1 } });
      expect(srv.hits()).toBe(2);
    });
  }

  it('works as the dispatcher of undici.fetch and undici.request', async () => {
    const srv = await startServer();
    const ch = channel(serverId.id.toString());
    const r = await undiciFetch(`${srv.url}/whoami`, { dispatcher: ch });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { peer: string }).peer).toBe(clientId.id.toString());
    const r2 = await undiciRequest(`${srv.url}/whoami`, { dispatcher: ch });
    expect(r2.statusCode).toBe(200);
    await r2.body.dump();
    const r3 = await undiciFetch(`${srv.url}/echo`, {
      dispatcher: ch,
      method: 'POST',
      body: JSON.stringify({ y: 2 }),
      headers: { 'content-type': 'application/json' },
    });
    expect(await r3.json()).toEqual({ got: { y: 2 } });
  });

  it('options passed with a URL cannot redirect the request to another origin, path or method', async () => {
    const srv = await startServer();
    const ch = channel(serverId.id);
    // Untyped callers could smuggle these in; the URL and the method of the call win.
    const sneaky = { origin: 'http://127.0.0.1:1', path: '/elsewhere', method: 'DELETE' } as never;
    const res = await ch.get(`${srv.url}/whoami`, sneaky);
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ peer: clientId.id.toString() });
    expect(srv.hits()).toBe(1);
    const res2 = await ch.request(`${srv.url}/whoami`, { ...(sneaky as object), method: 'GET' });
    expect(res2.statusCode).toBe(200);
    await res2.body.dump();
    expect(srv.hits()).toBe(2);
  });

  it('accepts a peer through an authorizer', async () => {
    const srv = await startServer();
    const ch = channel(authorizeMemberOf('a.test'));
    const res = await ch.get(`${srv.url}/whoami`);
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  });

  it('a mismatching server ID fails with PeerVerificationError before the request reaches the route', async () => {
    const srv = await startServer();
    const ch = channel('spiffe://a.test/someone-else', {
      retry: { retries: 3, minDelayMs: 1, maxDelayMs: 2 },
    });
    const err = await ch.get(`${srv.url}/whoami`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerVerificationError);
    const pve = err as PeerVerificationError;
    expect(pve.code).toBe('PEER_VERIFICATION_FAILED');
    expect(pve.expected).toBe('spiffe://a.test/someone-else');
    expect(pve.actual?.toString()).toBe(serverId.id.toString());
    expect(srv.hits()).toBe(0);

    // through fetch too: the cause is the same typed error
    const ferr = await undiciFetch(`${srv.url}/whoami`, { dispatcher: ch }).catch((e: unknown) => e);
    expect((ferr as Error).cause).toBeInstanceOf(PeerVerificationError);
    expect(srv.hits()).toBe(0);
  });

  it('an authorizer refusing the server fails with PeerVerificationError', async () => {
    const srv = await startServer();
    const ch = channel(authorizeId('spiffe://a.test/not-the-server'));
    const err = await ch.get(`${srv.url}/whoami`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerVerificationError);
    expect((err as PeerVerificationError).actual?.toString()).toBe(serverId.id.toString());
    expect(srv.hits()).toBe(0);
  });

  it('refuses plain http URLs and invalid configs at construction', async () => {
    const ch = channel(serverId.id);
    await expect(ch.get('http://127.0.0.1:1/x')).rejects.toMatchObject({ code: 'INSECURE_URL' });
    // A plaintext origin through fetch is refused too, and nothing reaches the server.
    let plainHits = 0;
    const plain = createServer((_req, res) => {
      plainHits++;
      res.end('plaintext');
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => plain.close(r)));
    const ferr = await undiciFetch(`http://127.0.0.1:${portOf(plain)}/`, { dispatcher: ch }).catch(
      (e: unknown) => e,
    );
    expect((ferr as Error).cause).toMatchObject({ code: 'INSECURE_URL' });
    await expect(
      ch.request({ origin: `http://127.0.0.1:${portOf(plain)}`, path: '/', method: 'GET' }),
    ).rejects.toMatchObject({ code: 'INSECURE_URL' });
    // Origins are checked once and remembered: asked again (and spelled other ways, and as a
    // URL object), a plaintext origin is still refused, on both entry points.
    for (const origin of [
      `http://127.0.0.1:${portOf(plain)}`,
      `HTTP://127.0.0.1:${portOf(plain)}`,
      new URL(`http://127.0.0.1:${portOf(plain)}`),
    ]) {
      await expect(ch.request({ origin, path: '/', method: 'GET' })).rejects.toMatchObject({
        code: 'INSECURE_URL',
      });
      const again = await undiciFetch(`${String(origin).replace(/\/$/, '')}/`, { dispatcher: ch }).catch(
        (e: unknown) => e,
      );
      expect((again as Error).cause).toMatchObject({ code: 'INSECURE_URL' });
    }
    expect(plainHits).toBe(0);
    expect(() => new SecureChannel(clientId, serverId.id, { verifyPeer: false as never })).toThrow(
      TransportConfigError,
    );
    expect(() => new SecureChannel(clientId, serverId.id, { minTlsVersion: 'TLSv1.1' as never })).toThrow(
      TransportConfigError,
    );
    expect(() => new SecureChannel(clientId, 'spiffe://A.test/x')).toThrow(/trust domain/);
  });

  it('close() waits for in-flight requests and async dispose closes', async () => {
    const srv = await startServer();
    const ch = new SecureChannel(clientId, serverId.id);
    const inflight = ch.get(`${srv.url}/whoami`);
    const closing = ch.close();
    const res = await inflight;
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    await closing;
    expect(ch.closed).toBe(true);
    await expect(ch.get(`${srv.url}/whoami`)).rejects.toBeDefined();

    const ch2 = new SecureChannel(clientId, serverId.id);
    await ch2[Symbol.asyncDispose]();
    expect(ch2.closed).toBe(true);
  });
});
