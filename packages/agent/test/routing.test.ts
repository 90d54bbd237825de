// A SecureAgent with several capabilities, called by the official
// @a2a-js/sdk 1.3 client, which knows nothing of Weave: a plain text message
// with no metadata. The agent routes it (router hook, then the default
// capability); the policy decides on the routed capability before it runs.
// Real dev Workload API, real mTLS on loopback, the shared local policy file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TaskState } from '@a2a-js/sdk';
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
} from '@a2a-js/sdk/client';
import { SpiffeId } from '@weave/identity';
import { SecureChannel, secureFetch } from '@weave/transport';
import { SecureAgent } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';
// The official SDK's request shapes, as the a2a package's interop tests build them.
import { sdkSendParams, sdkText } from '@weave/test-support/a2a-sdk';

let world: World;
let agent: SecureAgent;
let channel: SecureChannel;
const ran: string[] = [];

beforeAll(async () => {
  world = await startWorld();
  agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
    },
    logger: testLogger(),
    routing: {
      defaultCapability: 'search',
      // "admin: ..." is for the admin capability; anything else is left to the default.
      route: (message) => (message.parts[0]?.text?.startsWith('admin:') ? 'admin' : undefined),
    },
  })
    .capability('search', { input: z.string() }, (q) => {
      ran.push(`search:${q}`);
      return { hits: [`result for ${q}`] };
    })
    // The shared policy lets the orchestrator call search, never admin.
    .capability('admin', { input: z.string() }, (q) => {
      ran.push(`admin:${q}`);
      return 'done';
    });
  await agent.start();
  channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search), {
    circuitBreaker: false,
  });
});

afterAll(async () => {
  await channel?.close();
  await agent?.stop();
  await world?.close();
});

async function sdkClient() {
  const fetchImpl = secureFetch(channel);
  const factory = new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [new JsonRpcTransportFactory({ fetchImpl })],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
  return factory.createFromUrl(agent.url);
}

describe('a multi-capability SecureAgent and a client that names no capability', () => {
  it('a plain text message runs the default capability; the task metadata names it', async () => {
    const client = await sdkClient();
    const res = await client.sendMessage(sdkSendParams(sdkText('weave')));
    const task = res as Extract<typeof res, { id: string }>;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.metadata).toMatchObject({ skill: 'search' });
    const part = task.artifacts[0]?.parts[0]?.content;
    expect(part).toEqual({ $case: 'data', value: { hits: ['result for weave'] } });
    expect(ran).toContain('search:weave');
  });

  it('the router sends "admin:" to admin, and the policy refuses it before it runs', async () => {
    const client = await sdkClient();
    const before = ran.length;
    await expect(client.sendMessage(sdkSendParams(sdkText('admin: wipe')))).rejects.toThrow(/admin/);
    expect(ran.length).toBe(before);
    expect(ran.some((r) => r.startsWith('admin:'))).toBe(false);
  });

  it('a default capability the agent does not have is a start error', async () => {
    const bad = new SecureAgent({
      config: {
        name: 'bad',
        identity: { workloadApi: { socket: world.dev.address('summarizer') } },
        authz: { policyFile: world.policyFile },
      },
      logger: testLogger(),
      routing: { defaultCapability: 'nope' },
    }).capability('search', { input: z.string() }, () => 'x');
    await expect(bad.start()).rejects.toMatchObject({ code: 'AGENT_CONFIG_INVALID' });
  });
});
