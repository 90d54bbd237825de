// weave_requests_refused_total{reason} counts the A2A requests an agent
// answers with an error, those refused before any task exists included: with
// the task store unreachable, every SendMessage got 503 UNAVAILABLE and no
// metric moved (the counter existed, but nothing fed it). A successful call
// adds nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, A2AError, buildMessage } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import type { SecureAgent } from '../src/index.js';
import { AwayStore, ID, searchWithOps, startWorld, type World } from './helpers.js';

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

/** The samples of weave_requests_refused_total as the ops listener serves them. */
async function refusedSeries(): Promise<string[]> {
  const text = await (await fetch(`${agent.opsUrl}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('weave_requests_refused_total{'));
}

describe('weave_requests_refused_total', () => {
  it('counts each SendMessage refused UNAVAILABLE while the task store is down, on both HTTP bindings', async () => {
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search));
    const jsonRpc = new A2AClient({ dispatcher: channel, preferredBindings: ['JSONRPC'] });
    const rest = new A2AClient({ dispatcher: channel, preferredBindings: ['HTTP+JSON'] });
    const send = (client: A2AClient) =>
      client.sendMessage(agent.url, { message: buildMessage('search', { query: 'q' }) }).then(
        () => undefined,
        (e: unknown) => e,
      );
    try {
      expect(await send(jsonRpc)).toBeUndefined();
      expect(ran).toBe(1);
      expect(await refusedSeries()).toEqual([]);

      store.away = true;
      const failures = [
        ...(await Promise.all([1, 2, 3].map(() => send(jsonRpc)))),
        ...(await Promise.all([1, 2].map(() => send(rest)))),
      ];
      for (const err of failures) {
        expect(err).toBeInstanceOf(A2AError);
        expect((err as A2AError).code).toBe('UNAVAILABLE');
      }
      expect(ran).toBe(1);
      expect(await refusedSeries()).toEqual([
        'weave_requests_refused_total{reason="UNAVAILABLE",agent="search"} 5',
      ]);

      store.away = false;
      expect(await send(rest)).toBeUndefined();
      expect(ran).toBe(2);
      expect(await refusedSeries()).toEqual([
        'weave_requests_refused_total{reason="UNAVAILABLE",agent="search"} 5',
      ]);
    } finally {
      store.away = false;
      await channel.close();
    }
  });
});
