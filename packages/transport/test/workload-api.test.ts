// The production identity path: SVIDs and bundles from a Workload API (the
// project's dev server speaks SPIRE's gRPC protocol over Unix sockets), with
// rotation pushed over the stream.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { WorkloadApiIdentityProvider, authorizeId } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { portOf, removeTempDirs, tempDir } from '@weave/test-support/tls-fixtures';

const silent = pino({ level: 'silent' });
let wl: DevWorkloadApiServer;
let serverId: WorkloadApiIdentityProvider;
let clientId: WorkloadApiIdentityProvider;

beforeAll(async () => {
  wl = await DevWorkloadApiServer.start({
    stateDir: tempDir('weave-wl-'),
    trustDomain: 'wl.test',
    workloads: { server: 'spiffe://wl.test/server', client: 'spiffe://wl.test/client' },
    x509SvidTtlSeconds: 4,
    logger: silent,
  });
  [serverId, clientId] = await Promise.all([
    WorkloadApiIdentityProvider.create({ address: wl.address('server'), logger: silent }),
    WorkloadApiIdentityProvider.create({ address: wl.address('client'), logger: silent }),
  ]);
});
afterAll(async () => {
  await Promise.all([serverId?.close(), clientId?.close()]);
  await wl?.close();
  removeTempDirs();
});

describe('with WorkloadApiIdentityProvider', () => {
  it('mTLS works both ways and keeps working across SVID rotations pushed by the Workload API', async () => {
    const app = createMtlsServer({ identity: serverId, authorize: authorizeId('spiffe://wl.test/client') });
    app.get('/', async (req) => ({ peer: req.peer.toString() }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const ch = new SecureChannel(clientId, 'spiffe://wl.test/server');
    try {
      const url = `https://127.0.0.1:${portOf(app.server)}/`;
      const serials = new Set<string>();
      ch.onPeerVerified((e) => serials.add(e.serialNumber));
      const res = await ch.get(url);
      expect(await res.body.json()).toEqual({ peer: 'spiffe://wl.test/client' });
      // SVIDs live 4 s and rotate at about half: wait for both sides to rotate once.
      await vi.waitFor(
        async () => {
          expect(ch.generation).toBeGreaterThanOrEqual(1);
          const r = await ch.get(url);
          expect(r.statusCode).toBe(200);
          await r.body.dump();
          expect(serials.size).toBeGreaterThanOrEqual(2);
        },
        { timeout: 15_000, interval: 200 },
      );
    } finally {
      await ch.close();
      await app.close();
    }
  });
});
