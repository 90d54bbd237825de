// A streaming callAgent that reads slower than the callee's server holds
// events for it: the server ends the stream with UNAVAILABLE ("resume after
// event N") and the caller resumes from its last event id, so every progress
// message arrives once, in order, with the result. Real dev Workload API,
// mTLS on loopback, local policy; the callee is an A2AServer with a small
// per-subscriber buffer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { SecureAgent } from '../src/index.js';
import { ID, startSearchServer, startWorld, type SearchServer, type World } from './helpers.js';

/** The report's stream: 10 000 progress messages from one task. */
const STEPS = 10_000;

let world: World;
let search: SearchServer;
let caller: SecureAgent;

beforeAll(async () => {
  world = await startWorld();
  search = await startSearchServer(
    world,
    {
      description: 'floods its callers',
      server: {
        // Far less than the stream: the caller is cut off several times; the log keeps every event.
        limits: { maxStreamBufferBytes: 256 * 1024 },
        maxEventsPerTask: 2 * STEPS,
      },
    },
    (a2a) =>
      a2a.registerTaskHandler('steps', (ctx) => {
        for (let i = 1; i <= STEPS; i++) ctx.publishMessage(`step ${i}`);
        return { parts: [{ data: { done: STEPS } }] };
      }),
  );
  caller = search.caller;
});

afterAll(async () => {
  await search?.close();
  await world?.close();
});

describe('a streaming callAgent cut off as a slow reader', () => {
  it('resumes after each UNAVAILABLE: every progress message once, in order, and the result', async () => {
    const progress: string[] = [];
    const out = await caller.callAgent(
      ID.search,
      'steps',
      {},
      {
        stream: true,
        timeoutMs: 60_000,
        output: z.object({ done: z.number() }),
        onProgress: (text) => progress.push(text),
      },
    );
    expect(out).toEqual({ done: STEPS });
    expect(progress).toHaveLength(STEPS);
    expect(progress).toEqual(Array.from({ length: STEPS }, (_, i) => `step ${i + 1}`));
  });
});
