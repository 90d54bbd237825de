// /ready follows the task store: with a durable store that cannot be reached,
// every call fails with UNAVAILABLE (HTTP 503), and /ready says so on both
// listeners instead of 200; it is ready again once the store answers, with no
// call needed. It used to stay 200 {"ready":true} throughout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, buildMessage } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import type { SecureAgent } from '../src/index.js';
import { AwayStore, ID, opsReady, searchWithOps, startWorld, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
const store = new AwayStore();
let ran = 0;

beforeAll(async () => {
  world = await startWorld();
  agent = searchWithOps(world, { taskStore: store }).capability(
    'search',
    { input: z.object({ query: z.string() }) },
    ({ query }) => {
      ran++;
      return { hits: [query] };
    },
  );
  await agent.start();
});

afterAll(async () => {
  await agent?.stop();
  await world?.close();
});

describe('/ready and the task store', () => {
  it('is 503 while the store cannot be reached, and 200 again once it answers', async () => {
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
    const client = new A2AClient({ dispatcher: channel });
    const ready = () => opsReady(agent.opsUrl!);
    const mtlsReady = async () => {
      const r = await channel.get(`${agent.url}/ready`);
      await r.body.text();
      return r.statusCode;
    };
    try {
      expect(await ready()).toEqual({ status: 200, body: { ready: true } });
      store.away = true;
      const err = await client
        .sendMessage(agent.url, { message: buildMessage('search', { query: 'q' }) })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(A2AError);
      expect((err as A2AError).code).toBe('UNAVAILABLE');
      expect(ran).toBe(0);
      const down = await ready();
      expect(down.status).toBe(503);
      expect(down.body.reason).toMatch(/^the task store cannot be reached/);
      expect(await mtlsReady()).toBe(503);

      store.away = false;
      await ready();
      await new Promise((r) => setTimeout(r, 50));
      expect(await ready()).toEqual({ status: 200, body: { ready: true } });
      expect(await mtlsReady()).toBe(200);
    } finally {
      await channel.close();
    }
  });
});
