// Rotation under load: a steady request stream across several rotations on
// both sides, zero failures, new certificates seen by both sides. The SVIDs
// live 60 s and the test rotates them itself (rotate(), what each provider's
// timer calls) every few hundred milliseconds: with 3-second SVIDs rotating on
// their own timers, a loaded machine (load average above ~10) let an SVID
// expire before its late replacement arrived (CERT_HAS_EXPIRED), which
// measured the machine, not rotation. Each rotation waits for its update.
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { authorizeId } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { createMtlsServer } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;

beforeAll(async () => {
  A = await makeTd('a.test');
  serverId = await provider(A, '/server', { ttlSeconds: 60 });
  clientId = await provider(A, '/client', { ttlSeconds: 60 });
});
afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

describe('rotation under load', () => {
  for (const httpVersion of ['http1.1', 'http2'] as const) {
    it(`${httpVersion}: zero failed requests across several rotations; both sides see the new certificates`, async () => {
      const app = createMtlsServer({
        identity: serverId,
        authorize: authorizeId(clientId.id),
        config: { httpVersion },
      });
      app.get('/', async (req) => {
        const raw = req.raw as { socket: TLSSocket; stream?: { session?: { socket: TLSSocket } } };
        const sock = raw.stream?.session?.socket ?? raw.socket;
        return { clientSerial: sock.getPeerX509Certificate()?.serialNumber };
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const url = `https://127.0.0.1:${portOf(app.server)}/`;
      const ch = new SecureChannel(clientId, serverId.id, { httpVersion, retry: { retries: 0 } });

      const serverSerialsSeenByClient = new Set<string>();
      ch.onPeerVerified((e) => serverSerialsSeenByClient.add(e.serialNumber));
      const clientSerialsSeenByServer = new Set<string>();
      let serverRotations = 0;
      const unsub = serverId.onUpdate(() => serverRotations++);
      let clientRotations = 0;
      ch.onRotated(() => clientRotations++);

      let ok = 0;
      const failures: unknown[] = [];
      let stop = false;
      const worker = async () => {
        while (!stop) {
          try {
            const res = await ch.get(url);
            const body = (await res.body.json()) as { clientSerial?: string };
            if (res.statusCode !== 200 || !body.clientSerial)
              failures.push(new Error(`status ${res.statusCode}`));
            else {
              clientSerialsSeenByServer.add(body.clientSerial);
              ok++;
            }
          } catch (err) {
            failures.push(err);
          }
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      // Rotate both sides in turn until each rotated at least 3 times and each saw
      // 3+ certificates of the other, letting 20 more requests succeed after each
      // rotation (progress, not a wall-clock margin); the cap only guards against a hang.
      const deadline = Date.now() + 60_000;
      // A failure ends the wait at once: the assertions below report it.
      const progress = (target = ok + 20) =>
        vi.waitFor(() => failures.length > 0 || expect(ok).toBeGreaterThanOrEqual(target), {
          timeout: Math.max(1, deadline - Date.now()),
          interval: 20,
        });
      await progress();
      while (
        Date.now() < deadline &&
        failures.length === 0 &&
        !(
          serverRotations >= 3 &&
          clientRotations >= 3 &&
          serverSerialsSeenByClient.size >= 3 &&
          clientSerialsSeenByServer.size >= 3
        )
      ) {
        await serverId.rotate();
        await progress();
        await clientId.rotate();
        await progress();
      }
      stop = true;
      await Promise.all(workers);
      unsub();
      await ch.close();
      await app.close();

      expect(failures).toEqual([]);
      expect(ok).toBeGreaterThan(100);
      expect(serverRotations).toBeGreaterThanOrEqual(3);
      expect(clientRotations).toBeGreaterThanOrEqual(3);
      expect(serverSerialsSeenByClient.size).toBeGreaterThanOrEqual(3);
      expect(clientSerialsSeenByServer.size).toBeGreaterThanOrEqual(3);
      expect(ch.generation).toBe(clientRotations);
    });
  }
});
