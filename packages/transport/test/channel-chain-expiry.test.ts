// A SecureChannel ends a pooled connection, and a stream on it, when an
// intermediate CA of its server's chain expires before the server's leaf, and
// sends nothing more on it. Needs channel.ts to keep checkServerIdentity's
// verification (keepServerVerification) and hold on its end. Measured before
// that: requests and a stream over a pooled connection went on until the leaf's
// notAfter, an hour away. Intermediates living 1 to 2 seconds.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle } from '@weave/identity';
import { PeerVerificationError, SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import type { SetProvider } from '@weave/test-support/tls-fixtures';
import { makeIntermediate, makeRoot, type TestCa } from '../../identity/test/helpers/forge.js';
import { anyone, chainIdentity, KEEP, pastOf, secondAfter } from './helpers/chain-pki.js';
import { streamRoutes } from './helpers/stream-routes.js';

const TD = 'a.chain';
const VERSIONS = ['http1.1', 'http2'] as const;
const LIFE_MS = 1000;
const LATE_MS = 1000;
const HOUR = 3_600_000;

let root: TestCa;
let bundles: BundleSet;
let clientId: SetProvider;
const closers: Array<() => unknown> = [];

/** The peer `path` of TD, its chain through `issuers` (see chainIdentity). */
const identityOf = (issuers: TestCa[], path: string): Promise<SetProvider> =>
  chainIdentity(issuers, `spiffe://${TD}${path}`, bundles);

beforeAll(async () => {
  root = await makeRoot(TD, { notAfter: new Date(Date.now() + 24 * HOUR) });
  bundles = BundleSet.of(new X509Bundle(TD, [root.cert]));
  clientId = await identityOf([root], '/client');
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
});
afterAll(() => clientId?.close());

/** A server presenting [leaf (an hour), `mid`], and a channel to it. */
async function serverBehind(version: (typeof VERSIONS)[number], mid: TestCa) {
  const identity = await identityOf([root, mid], '/server');
  closers.push(() => identity.close());
  const app = createMtlsServer({
    identity,
    authorize: anyone,
    config: { httpVersion: version, idleTimeoutMs: 60_000 },
  });
  const served = streamRoutes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  const channel = new SecureChannel(clientId, `spiffe://${TD}/server`, { ...KEEP, httpVersion: version });
  closers.push(() => channel.destroy());
  return { version, origin: served.origin, channel, ran: served.ran };
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

/** Reads `/stream` until it fails or `giveUpAt`: when, and how. */
async function readStream(channel: SecureChannel, origin: string, giveUpAt: number) {
  const { body } = await channel.get(`${origin}/stream`);
  const giveUp = setTimeout(() => body.destroy(), giveUpAt - Date.now());
  try {
    for await (const _ of body);
    return { at: Date.now(), err: undefined as unknown };
  } catch (err) {
    return { at: Date.now(), err };
  } finally {
    clearTimeout(giveUp);
  }
}

describe("a SecureChannel: a pooled connection ends when an intermediate of its server's chain expires", () => {
  it('ends a stream at the intermediate’s notAfter and refuses the next request; no handler runs', async () => {
    const mid = await makeIntermediate(root, TD, {
      subject: 'CN=server short intermediate',
      notAfter: secondAfter(LIFE_MS),
    });
    const midEnd = mid.cert.notAfter.getTime();
    const cases = await Promise.all(VERSIONS.map((v) => serverBehind(v, mid)));
    for (const c of cases) expect(await get(c.channel, `${c.origin}/`), c.version).toBe(200);
    const ends = await Promise.all(cases.map((c) => readStream(c.channel, c.origin, midEnd + 3000)));
    await pastOf(midEnd);
    for (const [i, { version, origin, channel, ran }] of cases.entries()) {
      const end = ends[i]!;
      expect(end.err, version).toBeInstanceOf(PeerVerificationError);
      // At the very notAfter the chain still verifies (valid through it): the channel's own words then.
      expect((end.err as Error).message, version).toMatch(
        new RegExp(
          `intermediate CN=server short intermediate expired|certificate expired at ${new Date(midEnd).toISOString()}`,
        ),
      );
      expect(end.at - midEnd, `${version}: at the intermediate's expiry`).toBeLessThan(LATE_MS);
      const before = ran();
      expect(await get(channel, `${origin}/`), version).toBeInstanceOf(PeerVerificationError);
      expect(ran(), `${version}: no handler ran`).toBe(before);
    }
  });
});
