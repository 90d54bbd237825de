// A held connection ends when the path its peer's chain verified through
// expires, not only its leaf: an intermediate CA (or the bundle authority)
// that expires before the leaf ends it at its own notAfter. Measured before:
// a keep-alive request after the caller's intermediate expired ran its route,
// an HTTP/2 session and a stream to that caller went on (the hold waited for
// the leaf's notAfter, an hour away). A resumed caller's issuers come from the
// intermediates the server remembers: older ones of the same name, rotated
// out, must not end its connection at their expiry. Real mTLS, certificates
// forged with identity's test helpers, intermediates living 1 to 2 seconds.
import { once } from 'node:events';
import { connect as h2Connect } from 'node:http2';
import * as tls from 'node:tls';
import { Client } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle, verifyX509SvidPath, type IdentityProvider } from '@weave/identity';
import { createMtlsServer, type MtlsDenial } from '../src/server.js';
import {
  certChainForVerify,
  keepServerVerification,
  lightPeerCertificateForHandshake,
  peerNotAfter,
  serverNotAfter,
} from '../src/tls.js';
import { portOf, type SetProvider } from '@weave/test-support/tls-fixtures';
import { makeCert, makeIntermediate, makeRoot, type TestCa } from '../../identity/test/helpers/forge.js';
import { renewed } from '../../identity/test/helpers/renew.js';
import { anyone, chainIdentity, pastOf, secondAfter } from './helpers/chain-pki.js';
import { streamRoutes } from './helpers/stream-routes.js';

const TD = 'a.chain';
/** How long a short-lived intermediate lives at least (1 to 2 s: certificate times are whole seconds). */
const LIFE_MS = 1000;
/** How late after the expiry a connection may end, on a loaded machine. */
const LATE_MS = 1000;
const HOUR = 3_600_000;

let root: TestCa;
let bundles: BundleSet;
let serverId: SetProvider;
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  root = await makeRoot(TD, { notAfter: new Date(Date.now() + 24 * HOUR) });
  bundles = BundleSet.of(new X509Bundle(TD, [root.cert]));
  serverId = await identityOf([root], '/server');
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});
afterAll(() => serverId?.close());

/** An identity of `spiffe://<TD><path>` under the last of `issuers` (see chainIdentity). */
const identityOf = (issuers: TestCa[], path: string): Promise<SetProvider> =>
  chainIdentity(issuers, `spiffe://${TD}${path}`, bundles);

interface Creds {
  cert: string;
  key: string;
}

/** A caller's certificate (an hour) issued by `issuer`, presented with it. */
async function callerOf(issuer: TestCa, path: string): Promise<Creds> {
  const leaf = await makeCert(issuer, { uris: [`spiffe://${TD}${path}`] });
  return { cert: leaf.cert.toString('pem') + '\n' + issuer.cert.toString('pem'), key: leaf.keyPem };
}

interface Started {
  readonly port: number;
  readonly ran: () => number;
  /** The server's warn lines. */
  readonly lines: Array<Record<string, unknown>>;
}

/** createMtlsServer on `identity`, every verified caller admitted, with {@link streamRoutes}. */
async function start(
  httpVersion: 'http1.1' | 'http2',
  identity: IdentityProvider = serverId,
): Promise<Started> {
  const lines: Array<Record<string, unknown>> = [];
  const app = createMtlsServer({
    identity,
    authorize: anyone,
    config: { httpVersion, idleTimeoutMs: 60_000 },
    fastify: {
      logger: {
        level: 'warn',
        stream: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      },
    },
  });
  const served = streamRoutes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return { port: portOf(app.server), ran: served.ran, lines };
}

const tlsOf = (creds: Creds) => ({
  ...creds,
  ca: root.cert.toString('pem'),
  checkServerIdentity: () => undefined,
});

/** An HTTP/1.1 keep-alive client holding one connection. */
function h1Client(port: number, creds: Creds) {
  const client = new Client(`https://127.0.0.1:${port}`, {
    connect: tlsOf(creds),
    pipelining: 1,
    keepAliveTimeout: 60_000,
  });
  closers.push(() => client.destroy());
  return {
    async get(): Promise<{ status: number; body: string } | { error: string }> {
      try {
        const r = await client.request({ path: '/', method: 'GET' });
        return { status: r.statusCode, body: await r.body.text() };
      } catch (err) {
        return { error: String(err) };
      }
    },
    /** Reads `/stream` until it ends (or `giveUpAt`, epoch ms): when it ended. */
    async stream(giveUpAt: number): Promise<number> {
      const { body } = await client.request({ path: '/stream', method: 'GET' });
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

/** One HTTP/2 session over a TLS connection made here, resuming `session` when given. */
function h2Client(port: number, creds: Creds, session?: Buffer) {
  let socket: tls.TLSSocket | undefined;
  let ticket: Buffer | undefined;
  const h2 = h2Connect(`https://127.0.0.1:${port}`, {
    createConnection: () => {
      socket = tls.connect({ host: '127.0.0.1', port, ...tlsOf(creds), ALPNProtocols: ['h2'], session });
      socket.on('session', (t: Buffer) => (ticket = t));
      return socket;
    },
  });
  h2.on('error', () => undefined);
  closers.push(() => h2.destroy());
  let closedAt: number | undefined;
  h2.once('close', () => (closedAt = Date.now()));
  return {
    reused: () => socket?.isSessionReused(),
    ticket: () => ticket,
    closedAt: () => closedAt,
    async get(): Promise<{ status: number } | { error: string }> {
      try {
        const stream = h2.request({ ':path': '/' });
        const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
        for await (const _ of stream);
        return { status: Number(headers[':status']) };
      } catch (err) {
        return { error: String(err) };
      }
    },
    close: () => new Promise<void>((r) => h2.close(() => r())),
  };
}

describe("a server: a held connection ends when an intermediate of the caller's chain expires", () => {
  it('ends the stream and the HTTP/2 session at the intermediate’s notAfter, not the leaf’s; a request after it is refused and runs nothing', async () => {
    const [h1, h2] = await Promise.all([start('http1.1'), start('http2')]);
    const mid = await makeIntermediate(root, TD, {
      subject: 'CN=short intermediate',
      notAfter: secondAfter(LIFE_MS),
    });
    const midEnd = mid.cert.notAfter.getTime();
    const creds = await callerOf(mid, '/client');
    const idle = h1Client(h1.port, creds);
    const streaming = h1Client(h1.port, creds);
    const session = h2Client(h2.port, creds);
    expect(await idle.get()).toMatchObject({ status: 200 });
    expect(await session.get()).toMatchObject({ status: 200 });
    const streamEnded = await streaming.stream(midEnd + 3000);
    await pastOf(midEnd);

    expect(streamEnded - midEnd, 'the stream ended at the intermediate’s expiry').toBeLessThan(LATE_MS);
    expect(session.closedAt(), 'the HTTP/2 session was closed').toBeDefined();
    expect(session.closedAt()! - midEnd, 'at the intermediate’s expiry').toBeLessThan(LATE_MS);
    const closed = h2.lines.find((l) => l.msg === 'mTLS connection closed: its peer no longer verifies');
    expect(closed?.reason).toBe(
      `the intermediate CA CN=short intermediate of the client's chain expired at ${new Date(midEnd).toISOString()}`,
    );

    const [ran1, ran2] = [h1.ran(), h2.ran()];
    const after = await idle.get();
    expect(after).toMatchObject({ status: 403 });
    const denial = JSON.parse((after as { body: string }).body) as MtlsDenial;
    expect(denial.error.code).toBe('PEER_VERIFICATION_FAILED');
    expect(denial.error.message).toMatch(/^SVID_EXPIRED: intermediate CN=short intermediate expired at /);
    expect(await session.get()).toHaveProperty('error');
    expect([h1.ran(), h2.ran()], 'no route ran').toEqual([ran1, ran2]);
  });

  it('holds a resumed caller on the path it verified through: older intermediates of the same name, remembered, do not end it', async () => {
    const served = await start('http2');
    const soon = secondAfter(LIFE_MS);
    // Rotated out, both presented by other callers (so remembered): one of another key,
    // one whose key the current intermediate renews. Both expire in a second or two.
    const other = await makeIntermediate(root, TD, { subject: 'CN=rotating', notAfter: soon });
    const old = await makeIntermediate(root, TD, { subject: 'CN=rotating', notAfter: soon });
    const current = await renewed(old, root, new Date(Date.now() + HOUR));
    for (const [issuer, path] of [
      [other, '/a'],
      [old, '/b'],
    ] as const) {
      const c = h2Client(served.port, await callerOf(issuer, path));
      expect(await c.get()).toMatchObject({ status: 200 });
      await c.close();
    }
    const leaf = await makeCert(old, { uris: [`spiffe://${TD}/client`] });
    const creds = { cert: leaf.cert.toString('pem') + '\n' + current.cert.toString('pem'), key: leaf.keyPem };
    const full = h2Client(served.port, creds);
    expect(await full.get()).toMatchObject({ status: 200 });
    const ticket = full.ticket();
    expect(ticket).toBeDefined();
    await full.close();

    // Only the leaf comes back: its issuers are the server's remembered intermediates, all three.
    const resumed = h2Client(served.port, creds, ticket);
    expect(await resumed.get()).toMatchObject({ status: 200 });
    expect(resumed.reused()).toBe(true);
    await pastOf(soon.getTime());
    expect(resumed.closedAt(), 'still open past the old intermediates’ expiry').toBeUndefined();
    const ran = served.ran();
    expect(await resumed.get()).toMatchObject({ status: 200 });
    expect(served.ran()).toBe(ran + 1);
  });
});

describe('a server: a bundle update moves the end of a held connection to its new path', () => {
  it('ends an HTTP/2 session when the renewed authority the caller’s chain now ends in expires', async () => {
    const identity = await identityOf([root], '/server');
    closers.push(() => identity.close());
    const served = await start('http2', identity);
    const mid = await makeIntermediate(root, TD, { notAfter: new Date(Date.now() + HOUR) });
    const session = h2Client(served.port, await callerOf(mid, '/client'));
    expect(await session.get()).toMatchObject({ status: 200 });
    // The bundle's root, renewed with its key for a second or two: the caller's chain still verifies, through it.
    const shortRoot = await renewed(root, root, secondAfter(LIFE_MS));
    const rootEnd = shortRoot.cert.notAfter.getTime();
    identity.set(identity.getX509Svid(), BundleSet.of(new X509Bundle(TD, [shortRoot.cert])));
    expect(await session.get(), 'still trusted after the update').toMatchObject({ status: 200 });
    await pastOf(rootEnd);
    expect(session.closedAt(), 'the HTTP/2 session was closed').toBeDefined();
    expect(session.closedAt()! - rootEnd, 'at the renewed authority’s expiry').toBeLessThan(LATE_MS);
    const closed = served.lines.find((l) => l.msg === 'mTLS connection closed: its peer no longer verifies');
    expect(closed?.reason).toBe(
      `the bundle authority ${root.cert.subject} the client's chain ends in expired at ${new Date(rootEnd).toISOString()}`,
    );
  });
});

describe("a client: the end of a server's verified path, kept with its socket", () => {
  it('peerNotAfter answers the intermediate’s notAfter once checkServerIdentity kept its verification', async () => {
    const mid = await makeIntermediate(root, TD, {
      subject: 'CN=server intermediate',
      notAfter: new Date(Date.now() + HOUR / 2),
    });
    const identity = await identityOf([root, mid], '/server');
    closers.push(() => identity.close());
    const served = await start('http1.1', identity);
    const leafEnd = identity.getX509Svid().expiresAt.getTime();
    expect(mid.cert.notAfter.getTime()).toBeLessThan(leafEnd);

    const client = await callerOf(mid, '/client');
    let checked: tls.PeerCertificate | undefined;
    const socket = tls.connect({
      host: '127.0.0.1',
      port: served.port,
      ...client,
      ca: root.cert.toString('pem'),
      checkServerIdentity: (_host, cert) => {
        checked = cert;
        keepServerVerification(cert, verifyX509SvidPath(certChainForVerify(cert), bundles));
        return undefined;
      },
    });
    closers.push(() => socket.destroy());
    lightPeerCertificateForHandshake(socket);
    await once(socket, 'secureConnect');
    expect(peerNotAfter(socket)).toBe(mid.cert.notAfter.getTime());
    expect(serverNotAfter(checked!)).toBe(mid.cert.notAfter.getTime());
  });
});
