// weave_requests_refused_total{reason} counts the A2A requests an agent
// answers with an error, those refused before any task exists included: with
// the task store unreachable, every SendMessage got 503 UNAVAILABLE and no
// metric moved (the counter existed, but nothing fed it). A successful call
// adds nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  A2AClient,
  A2AError,
  InMemoryTaskStore,
  TaskStoreUnavailableError,
  buildMessage,
  type StoredEvent,
  type TaskRecord,
  type TaskStore,
} from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { SecureAgent } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

/**
 * An application's store over the embedded one that can be made unreachable
 * (as store-readiness.test.ts's AwayStore: refusing the task's creation is
 * enough here).
 */
class AwayStore extends InMemoryTaskStore implements TaskStore {
  away = false;
  override async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    if (this.away) throw new TaskStoreUnavailableError('connect ECONNREFUSED 10.0.0.5:5432');
    return super.create(record, first);
  }
}

let world: World;
let agent: SecureAgent;
const store = new AwayStore();
let ran = 0;

beforeAll(async () => {
  world = await startWorld();
  agent = new SecureAgent({
    config: {
      name: 'search',
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile: world.policyFile },
      observability: { ops: { host: '127.0.0.1', port: 0 } },
    },
    taskStore: store,
    logger: testLogger(),
  }).capability('search', { input: z.object({ query: z.string() }) }, ({ query }) => {
    ran++;
    return { hits: [query] };
  });
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
