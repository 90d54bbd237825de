import { once } from 'node:events';
import * as https from 'node:https';
import * as tls from 'node:tls';
import Fastify from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import {
  SecureChannel,
  TransportConfigError,
  createMtlsServerOptions,
  watchServerIdentity,
} from '../src/index.js';
import { createMtlsServer, mtlsAuth } from '../src/server.js';
import { makeTd, portOf, provider, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';

let A: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let mallory: DevCaIdentityProvider;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  A = await makeTd('a.test');
  [serverId, clientId, mallory] = await Promise.all([
    provider(A, '/server'),
    provider(A, '/client'),
    provider(A, '/mallory'),
  ]);
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(async () => {
  await Promise.all([serverId.close(), clientId.close(), mallory.close()]);
  removeTempDirs();
});

describe('server helpers', () => {
  it('createMtlsServerOptions: client certs required and verified, TLS floor from config, every trusted root', () => {
    const o = createMtlsServerOptions(serverId);
    expect(o.requestCert).toBe(true);
    expect(o.rejectUnauthorized).toBe(true);
    expect(o.minVersion).toBe('TLSv1.3');
    expect(o.ca).toContain('BEGIN CERTIFICATE');
    expect(createMtlsServerOptions(serverId, { minTlsVersion: 'TLSv1.2' }).minVersion).toBe('TLSv1.2');
    expect(() => createMtlsServerOptions(serverId, { minTlsVersion: 'TLSv1' as never })).toThrow(
      TransportConfigError,
    );
  });

  it('refuses settings that would bypass its TLS setup, and a misconfigured mtlsAuth', async () => {
    const authorize = authorizeId(clientId.id);
    expect(() =>
      createMtlsServer({ identity: serverId, authorize, fastify: { https: {} } as never }),
    ).toThrow(TransportConfigError);
    expect(() =>
      createMtlsServer({ identity: serverId, authorize, config: { verifyPeer: false as never } }),
    ).toThrow(TransportConfigError);
    const app = Fastify();
    void app.register(mtlsAuth, { identityProvider: serverId, authorize: undefined as never });
    await expect(app.ready()).rejects.toBeInstanceOf(TransportConfigError);
    await app.close().catch(() => undefined);
  });

  it('HTTP/2: a refused caller gets 403 and the route never runs; the allowed caller gets request.peer', async () => {
    let hits = 0;
    const app = createMtlsServer({
      identity: serverId,
      authorize: authorizeId(clientId.id),
      config: { httpVersion: 'http2' },
    });
    app.get('/', async (req) => {
      hits++;
      return { peer: req.peer.toString() };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    const url = `https://127.0.0.1:${portOf(app.server)}/`;

    const bad = new SecureChannel(mallory, serverId.id, { httpVersion: 'http2' });
    closers.push(() => bad.close());
    for (let i = 0; i < 3; i++) {
      const res = await bad.get(url);
      expect(res.statusCode).toBe(403);
      expect(await res.body.json()).toMatchObject({ error: { code: 'PEER_NOT_AUTHORIZED' } });
    }
    expect(hits).toBe(0);

    const good = new SecureChannel(clientId, serverId.id, { httpVersion: 'http2' });
    closers.push(() => good.close());
    const res = await good.get(url);
    expect(await res.body.json()).toEqual({ peer: clientId.id.toString() });
    expect(hits).toBe(1);
  });

  it('removing a federated bundle applies at once, even to an open keep-alive connection', async () => {
    const F = await makeTd('f.test');
    const fedServer = await provider(A, '/fed-server', { federatedBundles: [F.ca.x509Bundle] });
    const foreign = await provider(F, '/client', { federatedBundles: [A.ca.x509Bundle] });
    closers.push(() => Promise.all([fedServer.close(), foreign.close()]));
    let hits = 0;
    const app = createMtlsServer({ identity: fedServer, authorize: () => ({ ok: true }) });
    app.get('/', async (req) => {
      hits++;
      return { peer: req.peer.toString() };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    const url = `https://127.0.0.1:${portOf(app.server)}/`;
    let serverConnections = 0;
    app.server.on('secureConnection', () => serverConnections++);
    const ch = new SecureChannel(foreign, fedServer.id);
    closers.push(() => ch.close());

    const ok = await ch.get(url);
    expect(await ok.body.json()).toEqual({ peer: 'spiffe://f.test/client' });
    fedServer.removeFederatedBundle(F.ca.trustDomain);
    const refused = await ch.get(url);
    expect(refused.statusCode).toBe(403);
    expect(await refused.body.json()).toMatchObject({ error: { code: 'PEER_VERIFICATION_FAILED' } });
    // One TLS connection ever completed on the server (new ones now fail the handshake):
    // the refusal came from the re-check of the connection opened while F was trusted.
    expect(serverConnections).toBe(1);
    expect(hits).toBe(1);
  });

  it('watchServerIdentity: after a rotation new connections get the new certificate, old ones keep working', async () => {
    const server = https.createServer(createMtlsServerOptions(serverId), (_req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const unsubscribe = watchServerIdentity(server, serverId);
    closers.push(
      () =>
        new Promise<void>((r) => {
          unsubscribe();
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    const port = portOf(server);
    const serialOf = () =>
      new Promise<string>((resolve, reject) => {
        const { certChain, privateKey } = clientId.getX509Svid().toPem();
        const s = tls.connect(
          {
            host: '127.0.0.1',
            port,
            cert: certChain,
            key: privateKey,
            ca: A.ca.x509Bundle.toPem(),
            checkServerIdentity: () => undefined,
          },
          () => {
            resolve(s.getPeerX509Certificate()!.serialNumber);
            s.end();
          },
        );
        s.on('error', reject);
      });
    const before = await serialOf();
    expect(before).toBe(serverId.getX509Svid().certificates[0]!.serialNumber.toUpperCase());

    const ch = new SecureChannel(clientId, serverId.id);
    closers.push(() => ch.close());
    const first = await ch.get(`https://127.0.0.1:${port}/`);
    await first.body.dump();

    await serverId.rotate();
    const after = await serialOf();
    expect(after).not.toBe(before);
    expect(after).toBe(serverId.getX509Svid().certificates[0]!.serialNumber.toUpperCase());
    // the channel's existing keep-alive connection still works
    const again = await ch.get(`https://127.0.0.1:${port}/`);
    expect(await again.body.text()).toBe('ok');
  });
});
