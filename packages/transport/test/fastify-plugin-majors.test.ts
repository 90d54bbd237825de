// fastify-plugin is an optional peer dependency of @weave/transport/server whose
// range admits two majors, so a project that already holds either one installs
// Weave without a peer conflict. Each admitted major is exercised here: mtlsAuth,
// built by that fastify-plugin, registered on a plain HTTPS fastify, must reach
// routes declared outside it (the plugin is not encapsulated) and refuse a caller
// the authorizer does not allow before any route runs.
import { createRequire } from 'node:module';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { authorizeId } from '@weave/identity';
import { type DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel, createMtlsServerOptions } from '../src/index.js';
import { makeTd, portOf, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

const require = createRequire(import.meta.url);
const peerRange = (require('../package.json') as { peerDependencies: Record<string, string> })
  .peerDependencies['fastify-plugin'];

/** The two installed majors: `fastify-plugin-5` is an alias of fastify-plugin 5 in devDependencies. */
const majors = [
  { pkg: 'fastify-plugin-5', load: () => import('fastify-plugin-5') },
  { pkg: 'fastify-plugin', load: () => import('fastify-plugin') },
] as const;

let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let mallory: DevCaIdentityProvider;

beforeAll(async () => {
  const td = await makeTd('fp.test');
  [serverId, clientId, mallory] = await Promise.all([
    provider(td, '/server'),
    provider(td, '/client'),
    provider(td, '/mallory'),
  ]);
});
afterAll(async () => {
  await Promise.all([serverId.close(), clientId.close(), mallory.close()]);
  removeTempDirs();
  vi.doUnmock('fastify-plugin');
});

describe.each(majors)('mtlsAuth built by $pkg', ({ pkg, load }) => {
  it('the major installed is one the peer range admits', () => {
    const { version } = require(`${pkg}/package.json`) as { version: string };
    expect(peerRange?.split('||').map((r) => r.trim())).toContain(`^${version.split('.')[0]}.0.0`);
  });

  it('guards routes declared outside it: the allowed caller gets request.peer, another gets 403', async () => {
    vi.resetModules();
    let loaded = false;
    vi.doMock('fastify-plugin', () => {
      loaded = true;
      return load();
    });
    const { mtlsAuth } = await import('../src/server.js');
    expect(loaded).toBe(true); // server.ts was loaded anew, with this major
    let hits = 0;
    const app = Fastify({ https: createMtlsServerOptions(serverId) });
    await app.register(mtlsAuth, { identityProvider: serverId, authorize: authorizeId(clientId.id) });
    app.get('/', async (req) => {
      hits++;
      return { peer: req.peer.toString() };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `https://127.0.0.1:${portOf(app.server)}/`;
    const good = new SecureChannel(clientId, serverId.id);
    const bad = new SecureChannel(mallory, serverId.id);
    try {
      const refused = await bad.get(url);
      expect(refused.statusCode).toBe(403);
      expect(await refused.body.json()).toMatchObject({ error: { code: 'PEER_NOT_AUTHORIZED' } });
      expect(hits).toBe(0);
      const res = await good.get(url);
      expect(await res.body.json()).toEqual({ peer: clientId.id.toString() });
      expect(hits).toBe(1);
    } finally {
      await Promise.all([good.close(), bad.close()]);
      await app.close();
    }
  });
});
