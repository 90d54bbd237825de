// An SVID the user already holds, behind SvidIdentityProvider, used by a real
// SecureChannel against a real mTLS server: the server sees exactly the held
// certificate, and after the user's update() new connections present the new one.
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SvidIdentityProvider, authorizeId } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;

beforeAll(async () => {
  A = await makeTd('held.test');
  serverId = await provider(A, '/server');
});
afterAll(async () => {
  await serverId.close();
  removeTempDirs();
});

describe('SvidIdentityProvider over mTLS', () => {
  it('presents the held SVID; after update() new connections present the new one', async () => {
    const first = await A.ca.issueX509Svid('spiffe://held.test/client');
    const { certChain, privateKey } = first.toPem();
    const held = SvidIdentityProvider.create({
      svid: { certChain, key: privateKey },
      bundles: A.ca.x509Bundle.toPem(),
    });
    const app = createMtlsServer({ identity: serverId, authorize: authorizeId(held.id) });
    app.get('/', async (req) => ({
      clientSerial: (req.raw.socket as TLSSocket).getPeerX509Certificate()?.serialNumber,
    }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `https://127.0.0.1:${portOf(app.server)}/`;
    const ch = new SecureChannel(held, serverId.id, { retry: { retries: 0 }, circuitBreaker: false });
    let rotations = 0;
    ch.onRotated(() => rotations++);
    const serialSeen = async (): Promise<string> => {
      const res = await ch.get(url);
      expect(res.statusCode).toBe(200);
      return ((await res.body.json()) as { clientSerial: string }).clientSerial.toLowerCase();
    };
    try {
      expect(await serialSeen()).toBe(first.certificates[0]!.serialNumber.toLowerCase());
      const second = await A.ca.issueX509Svid('spiffe://held.test/client');
      held.update({ svid: second });
      expect(rotations).toBe(1);
      expect(await serialSeen()).toBe(second.certificates[0]!.serialNumber.toLowerCase());
    } finally {
      await ch.close();
      await app.close();
      await held.close();
    }
  });
});
