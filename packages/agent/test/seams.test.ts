// The seams a user reaches without config files: a PolicyEnforcer object in
// place of the authz section, and WeaveClient — callAgent without serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import {
  AgentConfigError,
  CallError,
  SecureAgent,
  WeaveClient,
  type IdentityProvider,
  type PolicyEnforcer,
} from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

const policy = (rules: string) =>
  LocalPolicyEnforcer.fromString(`version: 1\nid: seams\ndefault: deny\nrules:\n${rules}`, {
    logger: testLogger(),
  });
const rule = (id: string, actions: string[]) =>
  `  - id: ${id}\n    effect: allow\n    callers: ['${ID.orchestrator}']\n    callees: ['${ID.search}']\n    actions: ${JSON.stringify(actions)}\n`;

describe('seams', () => {
  let world: World;
  let search: SecureAgent;
  let client: WeaveClient;
  let searchUrl: string;
  const ran: string[] = [];

  beforeAll(async () => {
    world = await startWorld();
    // The callee allows only `search`; the caller's own policy also allows `reindex`.
    const calleePolicy: PolicyEnforcer = policy(rule('may-search', ['search']));
    search = new SecureAgent({
      config: { name: 'search' }, // no authz section: the enforcer object stands in for it
      identity: await world.provider('search'),
      enforcer: calleePolicy,
      logger: testLogger(),
      env: {},
    })
      .capability('search', { input: z.object({ q: z.string() }) }, ({ q }, ctx) => {
        ran.push('search');
        return { q, caller: ctx.caller.toString() };
      })
      .capability('reindex', { input: z.object({}) }, () => {
        ran.push('reindex');
        return {};
      })
      .capability('secret', { input: z.object({}) }, () => {
        ran.push('secret');
        return {};
      });
    const { url } = await search.start();
    searchUrl = url;
    const identity: IdentityProvider = await world.provider('orchestrator');
    client = new WeaveClient({
      identity,
      enforcer: policy(rule('may-search-and-reindex', ['search', 'reindex'])),
      peers: [{ id: ID.search, url }],
      logger: testLogger(),
    });
  });

  afterAll(async () => {
    await client?.close();
    await search?.stop();
    await world?.close();
  });

  it('a config without authz and without an enforcer is refused, saying the section is missing', () => {
    let err: unknown;
    try {
      new SecureAgent({ config: { name: 'x' }, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentConfigError);
    const issues = (err as AgentConfigError).issues;
    expect(issues[0]).toMatchObject({
      path: 'authz',
      message: expect.stringMatching(/authz section is missing/),
    });
    expect(String((err as Error).message)).toMatch(/authz section is missing/);
  });

  it('WeaveClient calls an agent without serving; the callee sees its verified SPIFFE ID', async () => {
    ran.length = 0;
    await expect(client.callAgent(ID.search, 'search', { q: 'weave' })).resolves.toEqual({
      q: 'weave',
      caller: ID.orchestrator,
    });
    expect(ran).toEqual(['search']);
  });

  it.each([
    // The client's own policy refuses first; the agent's enforcer object decides inbound.
    { capability: 'secret', deniedBy: 'caller' },
    { capability: 'reindex', deniedBy: 'callee' },
  ])(
    '$capability: CALL_DENIED by the $deniedBy, the handler never runs',
    async ({ capability, deniedBy }) => {
      ran.length = 0;
      const err = (await client.callAgent(ID.search, capability, {}).catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect({ code: err.code, deniedBy: err.deniedBy }).toEqual({ code: 'CALL_DENIED', deniedBy });
      expect(ran).toEqual([]);
    },
  );

  // An enforcer is the user's code, and may answer a PDP's JSON as it came
  // (`"allowed": "false"`) or throw. WeaveClient sent such a call (the
  // handler ran) and answered a throw as CALL_FAILED; SecureAgent denied both.
  it.each([
    ['answers allowed: "false"', () => ({ allowed: 'false', reason: 'pdp said no', auditId: 'a1' })],
    ['answers allowed: 1', () => ({ allowed: 1, reason: 'pdp said 1', auditId: 'a2' })],
    ['answers nothing', () => undefined],
    [
      'throws',
      () => {
        throw new Error('pdp down');
      },
    ],
    ['rejects', () => Promise.reject(new Error('pdp down'))],
  ])('an outbound enforcer that %s denies: CALL_DENIED by the caller, nothing sent', async (_, answer) => {
    const inner = policy(rule('may-search', ['search']));
    const odd = new WeaveClient({
      identity: await world.provider('orchestrator'),
      enforcer: {
        checkInbound: (c) => inner.checkInbound(c),
        checkOutbound: answer as unknown as PolicyEnforcer['checkOutbound'],
      },
      peers: [{ id: ID.search, url: searchUrl }],
      logger: testLogger(),
    });
    ran.length = 0;
    try {
      const err = (await odd
        .callAgent(ID.search, 'search', { q: 'x' })
        .catch((e: unknown) => e)) as CallError;
      expect(err).toBeInstanceOf(CallError);
      expect({ code: err.code, deniedBy: err.deniedBy }).toEqual({ code: 'CALL_DENIED', deniedBy: 'caller' });
      expect(ran).toEqual([]);
    } finally {
      await odd.close();
    }
  });

  it('a closed client refuses calls', async () => {
    const other = new WeaveClient({
      identity: await world.provider('orchestrator'),
      enforcer: policy(rule('may-search', ['search'])),
      logger: testLogger(),
    });
    await other.close();
    await expect(other.callAgent(ID.search, 'search', { q: 'x' })).rejects.toMatchObject({
      code: 'AGENT_NOT_STARTED',
    });
  });
});
