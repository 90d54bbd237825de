// SecureAgent capabilities marked `extended: true`: listed (with their schemas)
// only on the extended agent card, which only callers the policy allows get,
// signed by the agent's SVID like the public card. Real dev Workload API,
// mTLS on loopback, a local policy file.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, verifyAgentCard } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { request } from 'undici';
import { AgentError, SKILL_SCHEMAS_EXTENSION, SecureAgent } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

// The orchestrator may read the extended card and call both capabilities; the intruder only `lookup`.
const allow = (id: string, callers: string[], actions: string[]) => ({
  id,
  effect: 'allow',
  callers,
  actions,
});
const POLICY = JSON.stringify({
  version: 1,
  id: 'extended-card',
  default: 'deny',
  rules: [
    allow('orchestrator-sees-everything', [ID.orchestrator], ['a2a:GetExtendedAgentCard', 'lookup', 'audit']),
    allow('intruder-calls-lookup', [ID.intruder], ['lookup']),
  ],
});

let world: World;
let agent: SecureAgent;
let plain: SecureAgent;

beforeAll(async () => {
  world = await startWorld();
  const policyFile = join(world.dir, 'extended-policy.json');
  await writeFile(policyFile, POLICY);
  const agentOn = (
    name: string,
    workload: 'search' | 'summarizer',
    server: { v03Compat?: 'headerless' } = {},
  ) =>
    new SecureAgent({
      config: {
        name,
        spiffeId: ID[workload],
        identity: { workloadApi: { socket: world.dev.address(workload) } },
        authz: { policyFile },
        server,
      },
      logger: testLogger(),
    });
  const lookup = z.object({ id: z.string() });
  agent = agentOn('records', 'search')
    .capability('lookup', { input: lookup, description: 'public lookup' }, ({ id }) => ({ id }))
    .capability(
      'audit',
      { input: z.object({ since: z.string() }), description: 'for operators', extended: true },
      ({ since }) => ({ since }),
    );
  await agent.start();
  plain = agentOn('plain', 'summarizer', { v03Compat: 'headerless' }).capability(
    'lookup',
    { input: lookup },
    ({ id }) => ({ id }),
  );
  await plain.start();
});

afterAll(async () => {
  await agent?.stop();
  await plain?.stop();
  await world?.close();
});

async function client(who: 'orchestrator' | 'intruder', target: string) {
  const identity = await world.provider(who);
  const channel = new SecureChannel(identity, SpiffeId.parse(target));
  return { a2a: new A2AClient({ dispatcher: channel }), identity, close: () => channel.close() };
}

/** The A2A error `who` gets asking `target` (served at `url`) for its extended card. */
async function extendedCardRefusal(who: 'orchestrator' | 'intruder', target: string, url: string) {
  const c = await client(who, target);
  try {
    const err = (await c.a2a.getExtendedAgentCard(url).catch((e: unknown) => e)) as A2AError;
    expect(err).toBeInstanceOf(A2AError);
    return err;
  } finally {
    await c.close();
  }
}

describe('SecureAgent extended capabilities', () => {
  it('are absent from the public card, skills and schemas alike, on the wire too', async () => {
    const card = agent.agentCard();
    expect(card.skills.map((s) => s.id)).toEqual(['lookup']);
    expect(card.capabilities.extendedAgentCard).toBe(true);
    const schemas = card.capabilities.extensions?.find((e) => e.uri === SKILL_SCHEMAS_EXTENSION)?.params;
    expect(Object.keys(schemas ?? {})).toEqual(['lookup']);
    const c = await client('intruder', ID.search);
    try {
      const remote = await c.a2a.discoverAgent(agent.url);
      expect(remote.skills.map((s) => s.id)).toEqual(['lookup']);
      expect(JSON.stringify(remote)).not.toContain('audit');
    } finally {
      await c.close();
    }
  });

  it('are on the extended card of an allowed caller, with their schemas, signed by the SVID', async () => {
    const c = await client('orchestrator', ID.search);
    try {
      const ext = await c.a2a.getExtendedAgentCard(agent.url);
      expect(ext.skills.map((s) => s.id)).toEqual(['lookup', 'audit']);
      expect(ext.skills[1]).toMatchObject({ description: 'for operators' });
      const schemas = ext.capabilities.extensions?.find((e) => e.uri === SKILL_SCHEMAS_EXTENSION)?.params;
      expect(schemas).toMatchObject({
        lookup: { input: { properties: { id: { type: 'string' } } } },
        audit: { input: { properties: { since: { type: 'string' } } } },
      });
      const v = await verifyAgentCard(ext, {
        policy: 'required',
        bundles: c.identity,
        tlsPeer: SpiffeId.parse(ID.search),
      });
      expect(v).toMatchObject({ status: 'verified', via: 'x5c' });
      expect(v.status === 'verified' && v.spiffeId?.toString()).toBe(ID.search);
      // An extended capability is called like any other (the policy allows this caller).
      const r = await c.a2a.sendMessage(agent.url, {
        message: {
          messageId: 'm-audit',
          role: 'ROLE_USER',
          parts: [{ data: { since: 'yesterday' } }],
          metadata: { skill: 'audit' },
        },
      });
      expect('task' in r && r.task.status.state).toBe('TASK_STATE_COMPLETED');
    } finally {
      await c.close();
    }
  });

  it('are refused to a caller the policy does not allow the extended card (PERMISSION_DENIED)', async () => {
    expect((await extendedCardRefusal('intruder', ID.search, agent.url)).code).toBe('PERMISSION_DENIED');
  });

  it('an agent without extended capabilities declares no extended card (-32004)', async () => {
    expect(plain.agentCard().capabilities.extendedAgentCard).toBe(false);
    expect((await extendedCardRefusal('orchestrator', ID.summarizer, plain.url)).code).toBe(
      'UNSUPPORTED_OPERATION',
    );
    // It has no card to list one on: refused at registration, and nothing is served.
    expect(() => plain.capability('late', { input: z.object({}), extended: true }, () => ({}))).toThrowError(
      AgentError,
    );
    expect(plain.agentCard().skills.map((s) => s.id)).toEqual(['lookup']);
  });
});

describe('SecureAgent card versions (server.v03Compat)', () => {
  /** The card `url` serves to a request with `headers`, as JSON. */
  async function cardOf(url: string, target: string, headers: Record<string, string>) {
    const identity = await world.provider('orchestrator');
    const channel = new SecureChannel(identity, SpiffeId.parse(target));
    try {
      const res = await request(`${url}/.well-known/agent-card.json`, { dispatcher: channel, headers });
      return (await res.body.json()) as Record<string, unknown>;
    } finally {
      await channel.close();
    }
  }

  it('by default the v1.0 card without A2A-Version, the v0.3 card to A2A-Version 0.3', async () => {
    expect(await cardOf(agent.url, ID.search, {})).not.toHaveProperty('url');
    expect(await cardOf(agent.url, ID.search, { 'a2a-version': '0.3' })).toMatchObject({
      protocolVersion: '0.3.0',
      preferredTransport: 'JSONRPC',
    });
  });

  it('headerless: the v0.3 card without A2A-Version, the v1.0 card to A2A-Version 1.0', async () => {
    expect(await cardOf(plain.url, ID.summarizer, {})).toMatchObject({ protocolVersion: '0.3.0' });
    const v1 = await cardOf(plain.url, ID.summarizer, { 'a2a-version': '1.0' });
    expect(v1).not.toHaveProperty('url');
    expect(v1).toHaveProperty('supportedInterfaces');
  });
});
