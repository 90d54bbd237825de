// Two seams of SecureAgent: the outbound channel supplied by the user (a
// factory per peer, held to SPIFFE mTLS), and serving on a fastify instance the
// user already has (held to mTLS with identified callers). Real agents on the
// dev Workload API, real mTLS on loopback.
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeAny, type SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { AgentError, CallError, SecureAgent, WeaveClient, type ChannelFactory } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

const policy = () =>
  LocalPolicyEnforcer.fromString(
    `version: 1\nid: seams\ndefault: deny\nrules:\n  - id: may-search\n    effect: allow\n` +
      `    callers: ['${ID.orchestrator}']\n    callees: ['${ID.search}']\n    actions: ['search']\n`,
    { logger: testLogger() },
  );

describe('SecureAgent on a fastify instance of your own, called through your own channels', () => {
  let world: World;
  let app: MtlsFastifyInstance;
  let search: SecureAgent;
  let url: string;
  let ran = 0;
  /** Requests that reached the server, any route. */
  let requests = 0;
  const clients: WeaveClient[] = [];

  beforeAll(async () => {
    world = await startWorld();
    const identity = await world.provider('search');
    // The owner's instance, with a route of its own, made as the docs say.
    app = createMtlsServer({ identity, authorize: authorizeAny(), fastify: { logger: false } });
    app.addHook('onRequest', async () => void requests++);
    app.get('/owner', async (req) => ({ owner: true, peer: req.peer.toString() }));
    search = new SecureAgent({
      config: { name: 'search', server: { host: '127.0.0.1', port: 0 } },
      identity,
      enforcer: policy(),
      logger: testLogger(),
      env: {},
      server: app,
    }).capability('search', { input: z.object({ q: z.string() }) }, ({ q }, ctx) => {
      ran++;
      return { q, caller: ctx.caller.toString() };
    });
    ({ url } = await search.start());
  });

  afterAll(async () => {
    for (const c of clients) await c.close();
    await search?.stop();
    await world?.close();
  });

  async function client(channel?: ChannelFactory): Promise<WeaveClient> {
    const c = new WeaveClient({
      identity: await world.provider('orchestrator'),
      enforcer: policy(),
      peers: [{ id: ID.search, url }],
      logger: testLogger(),
      ...(channel ? { channel } : {}),
    });
    clients.push(c);
    return c;
  }

  it('serves the agent and the owner route on the same instance and port', async () => {
    expect(url).toBe(`https://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
    const c = await client();
    await expect(c.callAgent(ID.search, 'search', { q: 'mounted' })).resolves.toEqual({
      q: 'mounted',
      caller: ID.orchestrator,
    });
    const ch = new SecureChannel(await world.provider('orchestrator'), ID.search);
    try {
      const res = await ch.request({ origin: url, path: '/owner', method: 'GET' });
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual({ owner: true, peer: ID.orchestrator });
    } finally {
      await ch.close();
    }
  });

  it('uses the channel the factory builds for each peer, with the agent’s defaults', async () => {
    const built: Array<{ peer: string; defaults: unknown }> = [];
    const c = await client((peer, identity, defaults) => {
      built.push({ peer: peer.toString(), defaults });
      return new SecureChannel(identity, peer, { ...defaults, httpVersion: 'http2' });
    });
    const before = ran;
    await expect(c.callAgent(ID.search, 'search', { q: 'own channel' })).resolves.toMatchObject({
      q: 'own channel',
    });
    await c.callAgent(ID.search, 'search', { q: 'again' });
    expect(ran - before).toBe(2);
    expect(built).toHaveLength(1); // one channel per peer, reused
    expect(built[0]).toMatchObject({ peer: ID.search, defaults: { retry: { retries: expect.any(Number) } } });
    // The breaker is the channel's own (transport default), not switched off for an agent-level one.
    expect(built[0]!.defaults).not.toHaveProperty('circuitBreaker');
  });

  it('a factory returning a plain undici Agent: CLIENT_CERTIFICATE_REQUIRED, nothing sent', async () => {
    const plain = new Agent();
    try {
      const c = await client(() => plain as unknown as SecureChannel);
      const [ranBefore, requestsBefore] = [ran, requests];
      const err = await c.callAgent(ID.search, 'search', { q: 'x' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CallError);
      expect(err).toMatchObject({ code: 'CLIENT_CERTIFICATE_REQUIRED', target: ID.search });
      expect((err as Error).message).toContain('a client certificate is required');
      expect((err as Error).message).toContain('a plain undici Agent');
      expect([ran, requests]).toEqual([ranBefore, requestsBefore]);
    } finally {
      await plain.close();
    }
  });

  it('a factory returning a channel that verifies another peer: PEER_VERIFICATION_FAILED, nothing sent', async () => {
    const c = await client(
      (_peer: SpiffeId, identity) => new SecureChannel(identity, ID.summarizer), // not the peer asked for
    );
    const [ranBefore, requestsBefore] = [ran, requests];
    const err = await c.callAgent(ID.search, 'search', { q: 'x' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PEER_VERIFICATION_FAILED' });
    expect((err as Error).message).toContain(`verifies ${ID.summarizer} instead`);
    expect([ran, requests]).toEqual([ranBefore, requestsBefore]);
  });
});

describe('a fastify instance that does not verify client certificates is refused', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld();
  });
  afterAll(async () => {
    await world?.close();
  });

  async function startOn(server: MtlsFastifyInstance): Promise<unknown> {
    const agent = new SecureAgent({
      config: { name: 'search', server: { host: '127.0.0.1', port: 0 } },
      identity: await world.provider('search'),
      enforcer: policy(),
      logger: testLogger(),
      env: {},
      server,
    });
    return agent.start().then(
      async () => {
        await agent.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
  }

  it('a plain HTTP fastify: AGENT_CONFIG_INSECURE, never listening', async () => {
    const plain = Fastify();
    const err = await startOn(plain as unknown as MtlsFastifyInstance);
    expect(err).toBeInstanceOf(AgentError);
    expect(err).toMatchObject({ code: 'AGENT_CONFIG_INSECURE' });
    expect((err as Error).message).toContain('it does not require and verify client certificates');
    expect((err as Error).message).toContain('mtlsAuth is not registered');
    expect(plain.server.listening).toBe(false);
  });

  it('an HTTPS fastify with the SVID but no client certificate check: refused the same way', async () => {
    const identity = await world.provider('search');
    const { certChain, privateKey } = identity.getX509Svid().toPem();
    const https = Fastify({ https: { cert: certChain, key: privateKey } });
    const err = await startOn(https as unknown as MtlsFastifyInstance);
    expect(err).toMatchObject({ code: 'AGENT_CONFIG_INSECURE' });
    expect(https.server.listening).toBe(false);
  });
});
