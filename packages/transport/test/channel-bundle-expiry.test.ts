// A SecureChannel holds a connection to the path its server's chain verifies
// through now: after a bundle update that still trusts the server, through
// another authority (its root renewed with the same key), the connection
// ends when that path ends, sooner or later than the one it had. Measured
// before: the end stayed the old path's, so a stream outlived the renewed
// root's expiry (still running 3 s past it), and one whose path the update
// had lengthened was cut at the old end with the channel's "certificate
// expired" error. Real mTLS; roots renewed for 1 to 2 seconds.
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle } from '@weave/identity';
import { PeerVerificationError, SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import type { SetProvider } from '@weave/test-support/tls-fixtures';
import { makeRoot, type TestCa } from '../../identity/test/helpers/forge.js';
import { renewed } from '../../identity/test/helpers/renew.js';
import { anyone, chainIdentity, KEEP, pastOf, secondAfter } from './helpers/chain-pki.js';
import { streamRoutes } from './helpers/stream-routes.js';

const TD = 'a.bundle';
const VERSIONS = ['http1.1', 'http2'] as const;
/** How long a renewed root lives at least (1 to 2 s: certificate times are whole seconds). */
const LIFE_MS = 1000;
/** How late after the expiry a connection may end, on a loaded machine. */
const LATE_MS = 1000;
const HOUR = 3_600_000;

let root: TestCa;
let longBundle: BundleSet;
let serverId: SetProvider;
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  root = await makeRoot(TD, { notAfter: new Date(Date.now() + 24 * HOUR) });
  longBundle = BundleSet.of(new X509Bundle(TD, [root.cert]));
  serverId = await chainIdentity([root], `spiffe://${TD}/server`, longBundle);
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});
afterAll(() => serverId?.close());

/** The bundle of `TD` holding only `root` renewed with its key for a second or two, and when that ends. */
async function renewedRoot(): Promise<{ bundle: BundleSet; end: number }> {
  const short = await renewed(root, root, secondAfter(LIFE_MS));
  return { bundle: BundleSet.of(new X509Bundle(TD, [short.cert])), end: short.cert.notAfter.getTime() };
}

/** A server (its chain: a leaf of an hour under `root`) and a channel to it on a client trusting `bundles`. */
async function channelTo(version: (typeof VERSIONS)[number], bundles: BundleSet) {
  const app = createMtlsServer({
    identity: serverId,
    authorize: anyone,
    config: { httpVersion: version, idleTimeoutMs: 60_000 },
  });
  const served = streamRoutes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  const client = await chainIdentity([root], `spiffe://${TD}/client`, bundles);
  closers.push(() => client.close());
  const channel = new SecureChannel(client, `spiffe://${TD}/server`, { ...KEEP, httpVersion: version });
  closers.push(() => channel.destroy());
  return { version, origin: served.origin, channel, client };
}

/** `/stream` opened: its response has started, so its connection is verified and held. */
async function openStream(channel: SecureChannel, origin: string) {
  return (await channel.get(`${origin}/stream`)).body;
}

/** Reads a stream until it fails or `giveUpAt` (epoch ms): when, and the failure (undefined when given up). */
async function readStream(body: Awaited<ReturnType<typeof openStream>>, giveUpAt: number) {
  let givenUp = false;
  const giveUp = setTimeout(() => {
    givenUp = true;
    body.destroy();
  }, giveUpAt - Date.now());
  try {
    for await (const _ of body);
    return { at: Date.now(), err: new Error('the stream ended') as unknown };
  } catch (err) {
    return { at: Date.now(), err: givenUp ? undefined : err };
  } finally {
    clearTimeout(giveUp);
  }
}

/** The server's certificate as a raw `tls.connect` on the channel's TLS options sees it (as grpc-js does). */
async function rawConnection(channel: SecureChannel, origin: string) {
  const o = channel.tlsClientOptions();
  let checked: tls.PeerCertificate | undefined;
  const socket = tls.connect({
    host: '127.0.0.1',
    port: Number(new URL(origin).port),
    ...o,
    checkServerIdentity: (host, cert) => {
      checked = cert;
      return o.checkServerIdentity(host, cert);
    },
  });
  closers.push(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  return checked!;
}

describe('a SecureChannel: a bundle update moves the end of a held connection to its new path', () => {
  it('ends a stream, and a connection held with holdServer, when the renewed root the server’s chain now ends in expires', async () => {
    const cases = await Promise.all(VERSIONS.map((v) => channelTo(v, longBundle)));
    const { bundle: shortBundle, end: rootEnd } = await renewedRoot();
    const bodies = await Promise.all(cases.map((c) => openStream(c.channel, c.origin)));
    // Another client stack's connection on the channel's credentials (the gRPC binding's).
    const [first] = cases;
    const lapses: Array<{ at: number; err: PeerVerificationError }> = [];
    const held = first!.channel.holdServer(await rawConnection(first!.channel, first!.origin), (err) =>
      lapses.push({ at: Date.now(), err }),
    );
    expect(held.notAfter, 'the leaf’s hour under a root of a day').toBeGreaterThan(rootEnd + HOUR / 2);

    for (const c of cases) c.client.set(c.client.getX509Svid(), shortBundle);
    const ends = await Promise.all(bodies.map((b) => readStream(b, rootEnd + 3000)));
    await pastOf(rootEnd);

    for (const [i, { version }] of cases.entries()) {
      const end = ends[i]!;
      expect(end.err, `${version}: cut, not given up`).toBeInstanceOf(PeerVerificationError);
      expect((end.err as Error).message, version).toMatch(/expired/);
      expect(end.at, `${version}: not before the renewed root's expiry`).toBeGreaterThanOrEqual(rootEnd);
      expect(end.at - rootEnd, `${version}: at the renewed root's expiry`).toBeLessThan(LATE_MS);
    }
    // What the gRPC binding checks before each call on that connection.
    expect(held.notAfter, 'the renewed root’s end').toBe(rootEnd);
    expect(lapses).toHaveLength(1);
    expect(lapses[0]!.err).toBeInstanceOf(PeerVerificationError);
    expect(lapses[0]!.at - rootEnd, 'the held connection lapsed at the same time').toBeLessThan(LATE_MS);
  });

  it('keeps a stream open past the end of the old path when the update lengthens it', async () => {
    const { bundle: shortBundle, end: shortEnd } = await renewedRoot();
    const cases = await Promise.all(VERSIONS.map((v) => channelTo(v, shortBundle)));
    const bodies = await Promise.all(cases.map((c) => openStream(c.channel, c.origin)));

    for (const c of cases) c.client.set(c.client.getX509Svid(), longBundle);
    const ends = await Promise.all(bodies.map((b) => readStream(b, shortEnd + LATE_MS)));

    for (const [i, { version }] of cases.entries()) {
      const end = ends[i]!;
      expect(end.err, `${version}: still open when given up, past the old path's end`).toBeUndefined();
      expect(end.at, version).toBeGreaterThanOrEqual(shortEnd + LATE_MS);
    }
    expect(await cases[0]!.channel.get(`${cases[0]!.origin}/`).then((r) => r.statusCode)).toBe(200);
  });
});
