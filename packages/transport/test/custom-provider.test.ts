// A provider a user writes on IdentityProviderBase — one small class — is a
// full IdentityProvider for the transport: a real mTLS server and a real
// SecureChannel run on it, its published rotations reach new connections, and
// the guarded getter keeps a closed provider from connecting.
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BundleSet,
  IdentityNotReadyError,
  IdentityProviderBase,
  authorizeId,
  verifyX509Svid,
  type IdentityUpdate,
  type X509Svid,
} from '@weave/identity';
import { SecureChannel, TransportIdentityError } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { makeTd, portOf, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

/** The whole custom provider: where the SVID comes from is the user's business. */
class PulledProvider extends IdentityProviderBase {
  constructor(private readonly pull: () => Promise<{ svid: X509Svid; bundles: BundleSet }>) {
    super();
  }

  async refresh(): Promise<void> {
    const { svid, bundles } = await this.pull();
    verifyX509Svid(svid.certificates, bundles);
    this.publish({ svid, bundles });
  }
}

let A: TestTd;
const closers: (() => Promise<unknown>)[] = [];

function unready(path: string): PulledProvider {
  return new PulledProvider(async () => ({
    svid: await A.ca.issueX509Svid(`spiffe://${A.name}${path}`),
    bundles: BundleSet.of(A.ca.x509Bundle),
  }));
}

async function pulled(path: string): Promise<PulledProvider> {
  const p = unready(path);
  await p.refresh();
  closers.push(() => p.close());
  return p;
}

beforeAll(async () => {
  A = await makeTd('custom.test');
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(() => removeTempDirs());

describe('a custom provider built on IdentityProviderBase', () => {
  it('is not ready before its first publish', async () => {
    const p = unready('/late');
    expect(() => p.getX509Svid()).toThrow(IdentityNotReadyError);
    expect(() => p.id).toThrow(IdentityNotReadyError);
    await p.refresh();
    expect(p.id.toString()).toBe('spiffe://custom.test/late');
    expect(p.getBundleSet().getX509Bundle(p.id.trustDomain)?.equals(A.ca.x509Bundle)).toBe(true);
    await p.close();
  });

  it('serves and calls over mTLS, rotates by publish, refuses an unauthorized caller and a closed identity', async () => {
    const server = await pulled('/server');
    const client = await pulled('/client');
    const intruder = await pulled('/intruder');
    const seen: { peer: string; serial: string }[] = [];
    const app = createMtlsServer({ identity: server, authorize: authorizeId(client.id) });
    app.get('/', async (req) => {
      const serial = (req.raw.socket as TLSSocket).getPeerX509Certificate()?.serialNumber ?? '';
      seen.push({ peer: req.peer.toString(), serial: serial.toLowerCase() });
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    const url = `https://127.0.0.1:${portOf(app.server)}/`;
    const opts = { retry: { retries: 0 }, circuitBreaker: false } as const;
    const serialOf = (svid: X509Svid): string => svid.certificates[0]!.serialNumber.toLowerCase();

    const ch = new SecureChannel(client, server.id, opts);
    closers.push(() => ch.close());
    let rotated = 0;
    ch.onRotated(() => rotated++);
    const first = client.getX509Svid();
    expect((await ch.get(url)).statusCode).toBe(200);
    expect(seen).toEqual([{ peer: 'spiffe://custom.test/client', serial: serialOf(first) }]);

    const updates: IdentityUpdate[] = [];
    client.onUpdate((u) => updates.push(u));
    await client.refresh();
    const second = client.getX509Svid();
    expect(serialOf(second)).not.toBe(serialOf(first));
    expect(updates.map((u) => u.reason)).toEqual(['svid']);
    expect(rotated).toBe(1);
    expect((await ch.get(url)).statusCode).toBe(200);
    expect(seen[1]).toEqual({ peer: 'spiffe://custom.test/client', serial: serialOf(second) });

    // Authenticated by the same CA, not authorized: refused before the route runs.
    const bad = new SecureChannel(intruder, server.id, opts);
    closers.push(() => bad.close());
    const refused = await bad.get(url);
    expect(refused.statusCode).toBe(403);
    await refused.body.dump();
    expect(seen).toHaveLength(2);

    // Closed: the guarded getter refuses, so no channel can be built on it.
    await client.close();
    expect(() => client.getX509Svid()).toThrow(IdentityNotReadyError);
    expect(() => new SecureChannel(client, server.id, opts)).toThrow(TransportIdentityError);
    expect(seen).toHaveLength(2);
  });
});
