// WeaveClient takes an agent's `discovery` settings: a peer called by URL
// whose card is unsigned (a server of another SDK, or one that predates card
// signing) is refused by default, as by a SecureAgent, and called with
// `cardSignatures: 'if-present'`. It had no such option: such a peer could
// not be called from a WeaveClient at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AServer } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { AgentConfigError, CallError, WeaveClient } from '../src/index.js';
import { POLICY, startWorld, testLogger, type World } from './helpers.js';

let world: World;
let app: MtlsFastifyInstance;
let a2a: A2AServer;
let url: string;
let ran = 0;

beforeAll(async () => {
  world = await startWorld();
  // The search agent's SVID, on a bare A2A server that does not sign its card.
  const identity = await world.provider('search');
  a2a = new A2AServer({
    card: { name: 'unsigned', description: 'signs nothing', version: '1' },
    selfId: identity.id,
    enforcer: await LocalPolicyEnforcer.fromFile(world.policyFile, { watch: false }),
  });
  a2a.registerTaskHandler('search', () => {
    ran++;
    return { parts: [{ data: { hits: ['x'] } }] };
  });
  app = createMtlsServer({ identity, authorize: authorizeMemberOf('demo.weave') });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await a2a?.close();
  await app?.close();
  await world?.close();
});

async function client(discovery?: { cardSignatures: 'required' | 'if-present' }): Promise<WeaveClient> {
  return new WeaveClient({
    identity: await world.provider('orchestrator'),
    enforcer: LocalPolicyEnforcer.fromString(POLICY, { logger: testLogger() }),
    logger: testLogger(),
    ...(discovery ? { discovery } : {}),
  });
}

describe('WeaveClient calling a peer by URL whose card is unsigned', () => {
  it('is refused by default (PEER_VERIFICATION_FAILED, CARD_UNSIGNED), the handler not run', async () => {
    const c = await client();
    try {
      const err = await c.callAgent(url, 'search', {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CallError);
      expect((err as CallError).code).toBe('PEER_VERIFICATION_FAILED');
      expect((err as CallError).message).toContain('CARD_UNSIGNED');
      expect(ran).toBe(0);
    } finally {
      await c.close();
    }
  });

  it("is called with discovery.cardSignatures 'if-present', its ID still checked by mTLS", async () => {
    const c = await client({ cardSignatures: 'if-present' });
    try {
      expect(await c.callAgent(url, 'search', {})).toEqual({ hits: ['x'] });
      expect(ran).toBe(1);
    } finally {
      await c.close();
    }
  });

  it('a bad discovery setting is refused when the client is made', async () => {
    await expect(client({ cardSignatures: 'never' as 'required' })).rejects.toBeInstanceOf(AgentConfigError);
  });
});
