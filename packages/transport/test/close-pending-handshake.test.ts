// A TCP connection that never completes its TLS handshake (here: it never
// sends a ClientHello, which needs no certificate) no longer holds a
// createMtlsServer server: close() ends it at once (it waited for Node's
// 120 s handshake timeout: an agent's stop() took 119.8 s), and the server
// itself closes it after connectTimeoutMs. Real mTLS on loopback, dev-CA
// SVIDs; the idle caller is a plain net.connect socket.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import {
  makeTd,
  portOf,
  provider,
  rawTlsGet,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

/** Before the fix each case waited for Node's 120 s handshake timeout: it fails at this one. */
const CASE_TIMEOUT_MS = 15_000;

let td: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
const sockets: Socket[] = [];
const apps: MtlsFastifyInstance[] = [];

beforeAll(async () => {
  td = await makeTd('pending.test');
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
});

afterEach(async () => {
  // Sockets first: a server a case failed to close then closes.
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

afterAll(async () => {
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

async function startServer(httpVersion: 'http1.1' | 'http2', connectTimeoutMs: number) {
  let handled = 0;
  const app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { httpVersion, connectTimeoutMs },
  });
  app.get('/', async () => {
    handled++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  return { app, port: portOf(app.server), handled: () => handled };
}

/** A TCP connection the server has accepted, that sends nothing. */
async function silentConnection(app: MtlsFastifyInstance, port: number) {
  const accepted = once(app.server, 'connection');
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => undefined);
  const closed = once(socket, 'close').then(() => true);
  await once(socket, 'connect');
  await accepted;
  return { socket, closed };
}

/** A verified GET on a new connection (HTTP/1.1, also on an HTTP/2 server). */
function verifiedGet(port: number) {
  const svid = clientId.getX509Svid().toPem();
  return rawTlsGet({
    port,
    client: { cert: svid.certChain, key: svid.privateKey },
    ca: td.ca.x509Bundle.toPem(),
  });
}

describe.each(['http1.1', 'http2'] as const)(
  'createMtlsServer (%s): a connection without a handshake',
  (v) => {
    it(
      'is closed by close(), which resolves without waiting for it',
      async () => {
        // A handshake budget far past the case timeout: only close() can end the connection in time.
        const { app, port, handled } = await startServer(v, 600_000);
        const { closed } = await silentConnection(app, port);
        // Other callers are served meanwhile.
        expect((await verifiedGet(port)).status).toBe(200);

        await app.close();
        expect(await closed).toBe(true);
        expect(handled()).toBe(1);
      },
      CASE_TIMEOUT_MS,
    );

    it(
      'is closed by the server after connectTimeoutMs, and nothing runs',
      async () => {
        const { app, port, handled } = await startServer(v, 300);
        const { closed } = await silentConnection(app, port);
        expect(await closed).toBe(true);
        expect(handled()).toBe(0);
        // The budget bounds the handshake only: a caller that completes it is served.
        expect((await verifiedGet(port)).status).toBe(200);
        expect(handled()).toBe(1);
      },
      CASE_TIMEOUT_MS,
    );
  },
);
