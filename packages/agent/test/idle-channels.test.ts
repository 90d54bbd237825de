// A peer's outbound channel unused for transport.channelIdleMs is closed and
// forgotten, so an agent calling peers that come and go does not keep one per
// peer it ever called; a channel with a call in flight is kept however long
// the call lasts. The channels are seen through the agent's `channel` factory.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { SecureChannel } from '@weave/transport';
import { AgentConfigError, SecureAgent, applyEnvOverrides, parseAgentConfig } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

const IDLE_MS = 1_000;

let world: World;
let search: SecureAgent;
const callers: SecureAgent[] = [];

beforeAll(async () => {
  world = await startWorld();
  search = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
    },
    logger: testLogger(),
    env: {},
  })
    .capability('search', { input: z.object({ q: z.string() }) }, ({ q }) => ({ hits: [q] }))
    .capability('slow', { input: z.object({ ms: z.number() }) }, async ({ ms }, ctx) => {
      for (let left = ms; left > 0; left -= 200) {
        ctx.progress('working');
        await sleep(200);
      }
      return 'done';
    });
  await search.start();
});

afterEach(async () => {
  await Promise.all(callers.splice(0).map((a) => a.stop({ drainTimeoutMs: 0 })));
});

afterAll(async () => {
  await search?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** A started orchestrator with channelIdleMs 1 s, and every channel it made so far. */
async function startCaller(): Promise<{ agent: SecureAgent; channels: SecureChannel[] }> {
  const channels: SecureChannel[] = [];
  const agent = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: search.url }],
      transport: { channelIdleMs: IDLE_MS },
    },
    logger: testLogger(),
    env: {},
    channel: (peer, identity, defaults) => {
      const channel = new SecureChannel(identity, peer, defaults);
      channels.push(channel);
      return channel;
    },
  });
  callers.push(agent);
  await agent.start();
  return { agent, channels };
}

it('closes a channel no call used for channelIdleMs; the next call opens a new one', async () => {
  const { agent, channels } = await startCaller();
  expect(await agent.callAgent(ID.search, 'search', { q: 'a' })).toEqual({ hits: ['a'] });
  expect(channels).toHaveLength(1);
  // Closed between channelIdleMs and 1.5 × channelIdleMs after the call (a sweep every half).
  await sleep(IDLE_MS * 1.5);
  await expect.poll(() => channels[0]!.closed, { timeout: 1_000, interval: 50 }).toBe(true);
  expect(await agent.callAgent(ID.search, 'search', { q: 'b' })).toEqual({ hits: ['b'] });
  expect(channels).toHaveLength(2);
  expect(channels[1]!.closed).toBe(false);
});

it('keeps the channel of a unary or streaming call lasting longer than channelIdleMs', async () => {
  const [unary, streaming] = await Promise.all([startCaller(), startCaller()]);
  const ms = IDLE_MS * 1.8;
  const progress: string[] = [];
  const results = await Promise.all([
    unary.agent.callAgent(ID.search, 'slow', { ms }),
    streaming.agent.callAgent(
      ID.search,
      'slow',
      { ms },
      { stream: true, onProgress: (t) => progress.push(t) },
    ),
  ]);
  expect(results).toEqual(['done', 'done']);
  expect(progress.length).toBeGreaterThan(1);
  for (const { channels } of [unary, streaming]) {
    expect(channels).toHaveLength(1);
    expect(channels[0]!.closed).toBe(false);
  }
});

it('refuses a channelIdleMs below 1 s (file or environment) with a typed config error', () => {
  const minimal = { name: 'search', authz: { policyFile: 'policy.yaml' } };
  const idle = (transport: object, env: NodeJS.ProcessEnv = {}) =>
    parseAgentConfig(applyEnvOverrides({ ...minimal, transport }, env), { env }).transport.channelIdleMs;
  expect(idle({})).toBe(600_000);
  expect(idle({}, { WEAVE_TRANSPORT__CHANNEL_IDLE_MS: '5000' })).toBe(5_000);
  const key = 'transport.channelIdleMs';
  for (const [transport, env, path] of [
    [{ channelIdleMs: 0 }, {}, key],
    [{ channelIdleMs: 999 }, {}, key],
    [
      {},
      { WEAVE_TRANSPORT__CHANNEL_IDLE_MS: '0' },
      `${key} (environment variable WEAVE_TRANSPORT__CHANNEL_IDLE_MS)`,
    ],
  ] as const) {
    let err: unknown;
    try {
      idle(transport, env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentConfigError);
    expect((err as AgentConfigError).code).toBe('AGENT_CONFIG_INVALID');
    expect((err as AgentConfigError).issues).toEqual([{ path, message: expect.stringMatching(/>=1000/) }]);
  }
});
