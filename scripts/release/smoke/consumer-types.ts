// A TypeScript consumer of every package's public entries, compiled by the
// smoke run against the packed tarballs with `strict`,
// `exactOptionalPropertyTypes`, `noUncheckedIndexedAccess`,
// `verbatimModuleSyntax` and `skipLibCheck: false`, under both
// `moduleResolution: nodenext` and `bundler`: a published declaration that
// names a type a consumer cannot resolve (one emitted through a default
// import's namespace, as `mtlsAuth`'s was) fails here, not in a user's build.
// Type-checked only, never run.
import { z } from 'zod';
import { SpiffeId, authorizeMemberOf, type IdentityProvider, type X509ChainEntry } from '@weave/identity';
import { DevCertificateAuthority, DevCaIdentityProvider } from '@weave/identity/dev';
import {
  LocalPolicyEnforcer,
  type AuthzDecision,
  type InboundCheck,
  type PolicyEnforcer,
} from '@weave/authz';
import { SecureChannel, secureFetch } from '@weave/transport';
import { createMtlsServer, mtlsAuth } from '@weave/transport/server';
import {
  A2AClient,
  A2AServer,
  InMemoryTaskStore,
  type ChoreOutage,
  type StoreChore,
  type Task,
  type TaskContext,
  type TaskStore,
} from '@weave/a2a';
import { CallError, SecureAgent, WeaveClient, type AgentState } from '@weave/agent';

export class OwnEnforcer implements PolicyEnforcer {
  async checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return {
      allowed: check.caller.trustDomain.name === 'example.org',
      reason: 'trust domain',
      auditId: 'a1',
    };
  }
  async checkOutbound(): Promise<AuthzDecision> {
    return { allowed: false, reason: 'no calls out', auditId: 'a2' };
  }
}

export async function consumer(identity: IdentityProvider): Promise<void> {
  const store: TaskStore = new InMemoryTaskStore({ maxTasks: 100, maxTasksPerOwner: 10 });
  const a2a = new A2AServer({
    card: { name: 'n', description: 'd', version: '1.0.0' },
    selfId: identity.id,
    enforcer: new OwnEnforcer(),
    taskStore: store,
  });
  a2a.registerTaskHandler({ id: 's', name: 's', description: 'd', tags: ['t'] }, async (ctx: TaskContext) => {
    ctx.publishStatus('TASK_STATE_WORKING', 'working');
    return 'done';
  });
  const app = createMtlsServer({ identity, authorize: authorizeMemberOf('example.org') });
  app.get('/me', async (req) => ({ caller: req.peer.toString() }));
  await app.register(a2a.plugin, { prefix: '/a2a' });
  a2a.advertiseUrl('https://a2a.example.org/a2a');
  const plugin: typeof mtlsAuth = mtlsAuth;

  const channel = new SecureChannel(identity, 'spiffe://example.org/b');
  const client = new A2AClient({ dispatcher: channel });
  const task: Task = await client.sendTask('https://b.example.org', 's', { a: 1 });
  const fetchB: typeof fetch = secureFetch(channel);

  const agent = new SecureAgent({
    config: { name: 'a', version: '1.0.0', server: { port: 0 } },
    identity,
    enforcer: new OwnEnforcer(),
    taskStore: store,
  });
  agent.capability('greet', { input: z.object({ name: z.string() }) }, ({ name }, ctx) => ({
    hi: name,
    by: ctx.caller.toString(),
  }));
  const state: AgentState = agent.state;
  const weave = new WeaveClient({
    identity,
    enforcer: await LocalPolicyEnforcer.fromString('version: 1\nid: p\ndefault: deny\nrules: []\n'),
  });
  try {
    const out = await weave.callAgent(
      SpiffeId.parse('spiffe://example.org/b'),
      'greet',
      { name: 'a' },
      {
        output: z.object({ hi: z.string() }),
      },
    );
    const hi: string = out.hi;
    void hi;
  } catch (err) {
    if (err instanceof CallError) console.log(err.code, err.deniedBy);
  }
  const ca = await DevCertificateAuthority.create({ trustDomain: 'example.org' });
  const dev = await DevCaIdentityProvider.create({ ca, id: 'spiffe://example.org/c' });
  const chain: readonly X509ChainEntry[] = [];
  const chore: StoreChore = 'lease';
  const outage: ChoreOutage | undefined = undefined;
  void [task, fetchB, plugin, state, dev, chain, chore, outage];
}
