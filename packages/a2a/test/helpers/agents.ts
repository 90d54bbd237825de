import type { FastifyInstance } from 'fastify';
import type { Agent } from 'undici';
import { LocalPolicyEnforcer, type AuditRecord } from '@weave/authz';
import type { SpiffeId } from '@weave/identity';
import { A2AServer, type A2AServerOptions } from '../../src/index.js';
import { baseUrl, createPki, mtlsAgent, mtlsFastify, type Pki } from './pki.js';

export interface Harness {
  pki: Pki;
  serverId: SpiffeId;
  clientId: SpiffeId;
  strangerId: SpiffeId;
  app: FastifyInstance;
  a2a: A2AServer;
  url: string;
  /** Agent of the allowed client. */
  agent: Agent;
  /** Agent of a caller with a valid SVID that the policy does not allow. */
  strangerAgent: Agent;
  audit: AuditRecord[];
  close(): Promise<void>;
}

/**
 * A Weave A2A server over real mTLS with a LocalPolicyEnforcer that lets
 * /agent/client call every skill and /agent/stranger nothing.
 */
export async function startHarness(
  setup: (a2a: A2AServer) => void,
  extra: Partial<A2AServerOptions> = {},
  pkiIn?: Pki,
): Promise<Harness> {
  const pki = pkiIn ?? (await createPki());
  const server = await pki.issue('/agent/server');
  const client = await pki.issue('/agent/client');
  const stranger = await pki.issue('/agent/stranger');
  const audit: AuditRecord[] = [];
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'a2a-test',
      default: 'deny',
      rules: [{ id: 'client-all', effect: 'allow', callers: [client.id.toString()], actions: ['*'] }],
    },
    { audit: { record: (r: AuditRecord) => audit.push(r) } },
  );
  const a2a = new A2AServer({
    card: { name: 'test agent', description: 'a2a tests', version: '1.0.0' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
    ...extra,
  });
  setup(a2a);
  const app = mtlsFastify(pki, server);
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const agent = mtlsAgent(pki, client, server.id);
  const strangerAgent = mtlsAgent(pki, stranger, server.id);
  return {
    pki,
    serverId: server.id,
    clientId: client.id,
    strangerId: stranger.id,
    app,
    a2a,
    url: baseUrl(app),
    agent,
    strangerAgent,
    audit,
    async close() {
      await a2a.close();
      await agent.close();
      await strangerAgent.close();
      await app.close();
    },
  };
}
