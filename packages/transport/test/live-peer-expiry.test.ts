// A connection that stays open (HTTP/1.1 keep-alive, an HTTP/2 session, a
// long response) does not outlive its peer's certificate or trust, on either
// side. Measured before: a request over a kept-alive connection after the
// caller's certificate expired ran its route (HTTP/1.1 and HTTP/2), a stream
// to a caller whose certificate expired or whose CA left the bundle went on,
// and a SecureChannel sent requests over a pooled connection whose server
// certificate had expired, and kept receiving a stream from a server its
// bundle no longer trusted. Real mTLS with dev-CA SVIDs living about a
// second; raw HTTP/1.1 and HTTP/2 clients where the caller's certificate
// must expire (a SecureChannel refuses to call with an expired SVID of its own).
import { once } from 'node:events';
import { connect as h2Connect, type ClientHttp2Session } from 'node:http2';
import Fastify from 'fastify';
import { Client } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, type IdentityProvider } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel, createMtlsServerOptions } from '../src/index.js';
import { createMtlsServer, mtlsAuth, type MtlsDenial, type MtlsFastifyInstance } from '../src/server.js';
import {
  SetProvider,
  expiringSvid as svid,
  makeTd,
  provider,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';
import { streamRoutes, type Served } from './helpers/stream-routes.js';
import { anyone, KEEP } from './helpers/chain-pki.js';

const VERSIONS = ['http1.1', 'http2'] as const;
type Version = (typeof VERSIONS)[number];
/** How long a short-lived certificate lives at least (1 to 2 s: certificate times are whole seconds). */
const LIFE_MS = 1000;
/** How late after its peer's certificate expired a connection may end, on a loaded machine. */
const LATE_MS = 1000;
/** Idle connections stay open for the whole case: only expiry and trust may close them. */

let A: TestTd;
let B: TestTd;
/** The server's identity: trusts A and B (federated). */
let serverId: DevCaIdentityProvider;
/** The client's identity: trusts A and B (federated). */
let clientId: DevCaIdentityProvider;
const closers: Array<() => unknown> = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits until a moment after `t` (epoch ms). */
const pastOf = (t: number) => sleep(t + 200 - Date.now());

beforeAll(async () => {
  [A, B] = await Promise.all([makeTd('a.live'), makeTd('b.live')]);
  [serverId, clientId] = await Promise.all([
    provider(A, '/server', { federatedBundles: [B.ca.x509Bundle] }),
    provider(A, '/client', { federatedBundles: [B.ca.x509Bundle] }),
  ]);
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
  // Cases that dropped B put it back.
  serverId.addFederatedBundle(B.ca.x509Bundle);
  clientId.addFederatedBundle(B.ca.x509Bundle);
});
afterAll(async () => {
  await Promise.all([serverId.close(), clientId.close()]);
  removeTempDirs();
});

async function clientPem(td: TestTd, ms: number): Promise<{ cert: string; key: string; expiresAt: number }> {
  const s = await svid(td, '/client', ms);
  const { certChain, privateKey } = s.toPem();
  return { cert: certChain, key: privateKey, expiresAt: s.expiresAt.getTime() };
}

/** Counts what the routes ran; `/stream` writes a chunk every 100 ms until the caller goes. */
/** createMtlsServer on `identity`, every verified caller admitted. */
async function mtlsServer(version: Version, identity: IdentityProvider = serverId): Promise<Served> {
  const app = createMtlsServer({
    identity,
    authorize: anyone,
    config: { httpVersion: version, idleTimeoutMs: 60_000 },
  });
  const served = streamRoutes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return served;
}

/** A raw client holding one connection (HTTP/1.1 keep-alive or one HTTP/2 session) with `creds`. */
function rawClient(version: Version, origin: string, creds: { cert: string; key: string }) {
  const tls = { ...creds, ca: A.ca.x509Bundle.toPem(), checkServerIdentity: () => undefined };
  let session: ClientHttp2Session | undefined;
  let h1: Client | undefined;
  if (version === 'http2') {
    session = h2Connect(origin, tls);
    session.on('error', () => undefined);
    closers.push(() => session?.destroy());
  } else {
    h1 = new Client(origin, { connect: tls, pipelining: 1, keepAliveTimeout: 60_000 });
    closers.push(() => h1?.destroy());
  }
  return {
    /** One GET: its status and body, or the error that ended it. */
    async get(path = '/'): Promise<{ status: number; body: string } | { error: string }> {
      try {
        if (h1) {
          const r = await h1.request({ path, method: 'GET' });
          return { status: r.statusCode, body: await r.body.text() };
        }
        const stream = session!.request({ ':path': path });
        const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
        stream.setEncoding('utf8');
        let body = '';
        for await (const chunk of stream) body += chunk as string;
        return { status: Number(headers[':status']), body };
      } catch (err) {
        return { error: String(err) };
      }
    },
    /** Reads `/stream` until it ends (or `giveUpAt`, epoch ms): when it ended. */
    async stream(giveUpAt: number): Promise<number> {
      const body = h1
        ? (await h1.request({ path: '/stream', method: 'GET' })).body
        : session!.request({ ':path': '/stream' });
      const giveUp = setTimeout(() => body.destroy(), giveUpAt - Date.now());
      try {
        for await (const _ of body);
      } catch {
        // Cut: what is measured is when.
      }
      clearTimeout(giveUp);
      return Date.now();
    },
  };
}

describe('a server: no route runs for a caller whose certificate expired or whose chain is no longer trusted', () => {
  it('mtlsAuth refuses a request on a kept-alive connection made after the caller certificate expired (HTTP/1.1 and HTTP/2)', async () => {
    // mtlsAuth alone (no createMtlsServer, which also closes the connection): the per-request check.
    const cases = await Promise.all(
      VERSIONS.map(async (version) => {
        const app = Fastify({
          ...(version === 'http2' ? { http2: true as const } : {}),
          https: { ...createMtlsServerOptions(serverId), allowHTTP1: true },
          keepAliveTimeout: 60_000,
        } as never) as unknown as MtlsFastifyInstance;
        await app.register(mtlsAuth, { identityProvider: serverId, authorize: anyone });
        const served = streamRoutes(app);
        await app.listen({ port: 0, host: '127.0.0.1' });
        closers.push(() => app.close());
        const creds = await clientPem(A, LIFE_MS);
        return { version, served, creds, client: rawClient(version, served.origin, creds) };
      }),
    );
    for (const c of cases) expect(await c.client.get(), c.version).toMatchObject({ status: 200 });
    await pastOf(Math.max(...cases.map((c) => c.creds.expiresAt)));
    for (const { version, served, client } of cases) {
      const ran = served.ran();
      const after = await client.get();
      expect(served.connections(), `${version}: the same connection`).toBe(1);
      expect(after, version).toMatchObject({ status: 403 });
      const denial = JSON.parse((after as { body: string }).body) as MtlsDenial;
      expect(denial.error.code).toBe('PEER_VERIFICATION_FAILED');
      expect(denial.error.message).toContain('SVID_EXPIRED');
      expect(served.ran(), `${version}: no route ran`).toBe(ran);
    }
  });

  it('createMtlsServer ends the connection, and a stream on it, when the caller certificate expires; a valid caller is served', async () => {
    const cases = await Promise.all(
      VERSIONS.map(async (version) => {
        const served = await mtlsServer(version);
        const creds = await clientPem(A, LIFE_MS);
        return { version, served, creds, client: rawClient(version, served.origin, creds) };
      }),
    );
    const ended = await Promise.all(cases.map((c) => c.client.stream(c.creds.expiresAt + 3000)));
    for (const [i, { version, served, creds }] of cases.entries()) {
      expect(ended[i]! - creds.expiresAt, `${version}: the stream ended at the expiry`).toBeLessThan(LATE_MS);
      const ran = served.ran();
      const fresh = rawClient(version, served.origin, await clientPem(A, 60_000));
      expect(await fresh.get(), version).toMatchObject({ status: 200 });
      expect(served.ran()).toBe(ran + 1);
    }
  });

  it('createMtlsServer ends the connection, and a stream on it, when a bundle update drops the caller CA; no request of it runs', async () => {
    const cases = await Promise.all(
      VERSIONS.map(async (version) => {
        const served = await mtlsServer(version);
        return { version, served, client: rawClient(version, served.origin, await clientPem(B, 60_000)) };
      }),
    );
    for (const c of cases) expect(await c.client.get(), c.version).toMatchObject({ status: 200 });
    const streams = Promise.all(cases.map((c) => c.client.stream(Date.now() + 3000)));
    await sleep(300);
    const dropped = Date.now();
    serverId.removeFederatedBundle(B.ca.trustDomain);
    const ended = await streams;
    for (const [i, { version, served, client }] of cases.entries()) {
      expect(ended[i]! - dropped, `${version}: the stream ended at the update`).toBeLessThan(LATE_MS);
      const ran = served.ran();
      expect(await client.get(), version).not.toMatchObject({ status: 200 });
      expect(served.ran(), `${version}: no route ran`).toBe(ran);
    }
  });
});

describe('a SecureChannel: a pooled connection whose server certificate expired or is no longer trusted carries nothing more', () => {
  /** A server whose own SVID lives `ms`, and a channel to it (HTTP version `version`). */
  async function shortLivedServer(version: Version, td: TestTd, ms: number) {
    const identity = new SetProvider();
    const own = await svid(td, '/server', ms);
    identity.set(own, BundleSet.of(A.ca.x509Bundle, B.ca.x509Bundle));
    closers.push(() => identity.close());
    const served = await mtlsServer(version, identity);
    const channel = new SecureChannel(clientId, `spiffe://${td.name}/server`, {
      ...KEEP,
      httpVersion: version,
    });
    closers.push(() => channel.destroy());
    const serials: string[] = [];
    channel.onPeerVerified((e) => serials.push(e.serialNumber));
    return { version, identity, served, channel, serials, expiresAt: own.expiresAt.getTime() };
  }

  async function get(channel: SecureChannel, url: string): Promise<number | unknown> {
    try {
      const r = await channel.get(url);
      await r.body.dump();
      return r.statusCode;
    } catch (err) {
      return err;
    }
  }

  /** Reads `/stream` until it fails (its error) or `giveUpAt` (epoch ms) comes (undefined). */
  async function readStream(channel: SecureChannel, origin: string, giveUpAt: number): Promise<unknown> {
    const { body } = await channel.get(`${origin}/stream`);
    const giveUp = setTimeout(() => body.destroy(), giveUpAt - Date.now());
    try {
      for await (const _ of body);
      return undefined;
    } catch (err) {
      return err;
    } finally {
      clearTimeout(giveUp);
    }
  }

  it('no request goes to a server whose certificate expired: PeerVerificationError, no handler ran', async () => {
    const cases = await Promise.all(VERSIONS.map((v) => shortLivedServer(v, A, LIFE_MS)));
    for (const c of cases) expect(await get(c.channel, `${c.served.origin}/`), c.version).toBe(200);
    await pastOf(Math.max(...cases.map((c) => c.expiresAt)));
    for (const { version, served, channel } of cases) {
      const ran = served.ran();
      const err = await get(channel, `${served.origin}/`);
      expect(err, version).toBeInstanceOf(PeerVerificationError);
      expect(served.ran(), `${version}: no handler ran`).toBe(ran);
    }
  });

  it('after the server rotated, the request goes over a new connection that presents its new certificate', async () => {
    const cases = await Promise.all(VERSIONS.map((v) => shortLivedServer(v, A, LIFE_MS)));
    for (const c of cases) expect(await get(c.channel, `${c.served.origin}/`), c.version).toBe(200);
    for (const c of cases) {
      c.identity.set(await svid(A, '/server', 60_000), BundleSet.of(A.ca.x509Bundle, B.ca.x509Bundle));
    }
    await pastOf(Math.max(...cases.map((c) => c.expiresAt)));
    for (const { version, served, channel, serials } of cases) {
      expect(await get(channel, `${served.origin}/`), version).toBe(200);
      expect(served.connections(), `${version}: a new connection`).toBe(2);
      expect(new Set(serials).size, `${version}: the new certificate`).toBe(2);
    }
  });

  it('a stream from a server whose certificate expires ends with PeerVerificationError', async () => {
    const cases = await Promise.all(VERSIONS.map((v) => shortLivedServer(v, A, LIFE_MS)));
    const ends = await Promise.all(
      cases.map((c) => readStream(c.channel, c.served.origin, c.expiresAt + 3000)),
    );
    for (const [i, end] of ends.entries()) {
      expect(end, cases[i]!.version).toBeInstanceOf(PeerVerificationError);
    }
  });

  it('a bundle update that drops the server CA ends a stream from it and refuses the next request', async () => {
    const cases = await Promise.all(VERSIONS.map((v) => shortLivedServer(v, B, 60_000)));
    const ends = Promise.all(cases.map((c) => readStream(c.channel, c.served.origin, Date.now() + 3000)));
    await sleep(300);
    clientId.removeFederatedBundle(B.ca.trustDomain);
    for (const [i, end] of (await ends).entries()) {
      expect(end, cases[i]!.version).toBeInstanceOf(PeerVerificationError);
      expect((end as Error).message).toContain('SVID_UNKNOWN_TRUST_DOMAIN');
    }
    for (const { version, served, channel } of cases) {
      const ran = served.ran();
      expect(await get(channel, `${served.origin}/`), version).toBeInstanceOf(PeerVerificationError);
      expect(served.ran(), `${version}: no handler ran`).toBe(ran);
    }
  });
});
