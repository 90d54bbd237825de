// A channel whose own SVID has expired (and nothing replaced it) fails a call
// at once with TransportIdentityError saying so, and opens no connection: it
// does not handshake with a certificate the peer will refuse. Real files,
// real dev CA, a real mTLS server on loopback.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId, StaticMtlsProvider } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel, TransportIdentityError } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import {
  devSvidPem,
  makeTd,
  portOf,
  provider,
  removeTempDirs,
  tempDir,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

let td: TestTd;
let serverId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let url: string;
let connections = 0;
let hits = 0;

beforeAll(async () => {
  td = await makeTd('exp.test');
  serverId = await provider(td, '/server');
  app = createMtlsServer({ identity: serverId, authorize: authorizeId(`spiffe://${td.name}/client`) });
  app.get('/ping', async () => {
    hits++;
    return { ok: true };
  });
  app.server.on('connection', () => connections++);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `https://127.0.0.1:${portOf(app.server)}/ping`;
});

afterAll(async () => {
  await app.close();
  await serverId.close();
  removeTempDirs();
});

/** A static identity from files whose SVID expires `ms` from now. */
async function shortLived(ms: number): Promise<StaticMtlsProvider> {
  const dir = tempDir('weave-exp-');
  const { cert, key } = await devSvidPem(td, '/client', {
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + ms),
  });
  writeFileSync(join(dir, 'cert.pem'), cert);
  writeFileSync(join(dir, 'key.pem'), key);
  writeFileSync(join(dir, 'bundle.pem'), td.ca.x509Bundle.toPem());
  return StaticMtlsProvider.create({
    certFile: join(dir, 'cert.pem'),
    keyFile: join(dir, 'key.pem'),
    bundleFile: join(dir, 'bundle.pem'),
    watch: false,
  });
}

describe('a channel whose SVID has expired', () => {
  it('calls while valid, then fails fast with TransportIdentityError and opens no connection', async () => {
    const identity = await shortLived(2000);
    const channel = new SecureChannel(identity, `spiffe://${td.name}/server`, { retry: { retries: 0 } });
    try {
      const ok = await channel.get(url);
      expect(ok.statusCode).toBe(200);
      await ok.body.dump();
      expect(hits).toBe(1);
      await channel.close();

      const after = new SecureChannel(identity, `spiffe://${td.name}/server`, { retry: { retries: 0 } });
      await new Promise((r) => setTimeout(r, 2200));
      const before = connections;
      const started = Date.now();
      const err = await after.get(url).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(Date.now() - started).toBeLessThan(1000);
      expect(err).toBeInstanceOf(TransportIdentityError);
      expect((err as TransportIdentityError).code).toBe('TRANSPORT_IDENTITY_UNAVAILABLE');
      expect((err as Error).message).toMatch(
        new RegExp(`no valid X\\.509-SVID \\(.*spiffe://${td.name}/client.* expired at `),
      );
      // Also through undici's dispatcher entry point (A2A's client uses it).
      const viaDispatch = await new Promise<unknown>((resolve) => {
        after.dispatch(
          { origin: new URL(url).origin, path: '/ping', method: 'GET' },
          { onError: resolve, onConnect() {}, onHeaders: () => true, onData: () => true, onComplete() {} },
        );
      });
      expect(viaDispatch).toBeInstanceOf(TransportIdentityError);
      expect(connections).toBe(before);
      expect(hits).toBe(1);
      await after.close();
    } finally {
      await identity.close();
    }
  });
});
