// server.keepaliveMs reaches the agent's streams: a quiet task's SSE stream
// carries a heartbeat comment at that interval. Read raw, on a real mTLS
// connection from the orchestrator's SVID to a started agent (dev Workload
// API, local policy), since A2AClient hides heartbeats from its callers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { z } from 'zod';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { SecureAgent, type CapabilityContext } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

let world: World;
const agents: SecureAgent[] = [];

beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => {
  for (const a of agents) await a.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** A started search agent with `keepaliveMs` whose `stuck` task waits until canceled. */
async function searchAgent(keepaliveMs: number | undefined): Promise<SecureAgent> {
  const agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      server: { port: 0, bindings: ['JSONRPC'], ...(keepaliveMs === undefined ? {} : { keepaliveMs }) },
    },
    logger: testLogger(),
  }).capability('stuck', { input: z.object({}) }, (_input: unknown, ctx: CapabilityContext) => {
    return new Promise((_resolve, reject) =>
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)),
    );
  });
  agents.push(agent);
  await agent.start();
  return agent;
}

/** Heartbeat comments on a stream of a quiet task, read for `ms`. */
async function heartbeatsWithin(agent: SecureAgent, ms: number): Promise<number> {
  const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
  const ac = new AbortController();
  try {
    const res = await request(agent.url, {
      dispatcher: channel,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'SendStreamingMessage',
        params: {
          message: {
            messageId: crypto.randomUUID(),
            role: 'ROLE_USER',
            parts: [{ data: {} }],
            metadata: { skill: 'stuck' },
          },
        },
      }),
      signal: ac.signal,
    });
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    let text = '';
    const stop = setTimeout(() => ac.abort(), ms);
    try {
      for await (const chunk of res.body) text += String(chunk);
    } catch {
      // aborted after `ms`
    } finally {
      clearTimeout(stop);
    }
    expect(text).toContain('"task"');
    return text.split(': keep-alive').length - 1;
  } finally {
    await channel.close();
  }
}

describe('server.keepaliveMs', () => {
  it('sets the heartbeat of a quiet stream', async () => {
    expect(await heartbeatsWithin(await searchAgent(100), 1_000)).toBeGreaterThanOrEqual(5);
  });

  it('is 15 s by default: none within a second', async () => {
    expect(await heartbeatsWithin(await searchAgent(undefined), 1_000)).toBe(0);
  });

  it('0 sends none (nothing at every tick)', async () => {
    expect(await heartbeatsWithin(await searchAgent(0), 1_000)).toBe(0);
  });
});
