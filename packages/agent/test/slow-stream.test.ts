// A streaming callAgent that reads slower than the callee's server holds
// events for it: the server ends the stream with UNAVAILABLE ("resume after
// event N") and the caller resumes from its last event id, so every progress
// message arrives once, in order, with the result. Real dev Workload API,
// mTLS on loopback, local policy; the callee is an A2AServer with a small
// per-subscriber buffer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AServer } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId, authorizeAny } from '@weave/identity';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { SecureAgent } from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

/** The report's stream: 10 000 progress messages from one task. */
const STEPS = 10_000;

let world: World;
let app: MtlsFastifyInstance;
let a2a: A2AServer;
let caller: SecureAgent;

beforeAll(async () => {
  world = await startWorld();
  const identity = await world.provider('search');
  a2a = new A2AServer({
    card: { name: 'search', description: 'floods its callers', version: '1' },
    selfId: SpiffeId.parse(ID.search),
    enforcer: await LocalPolicyEnforcer.fromFile(world.policyFile, { watch: false }),
    // Far less than the stream: the caller is cut off several times; the log keeps every event.
    limits: { maxStreamBufferBytes: 256 * 1024 },
    maxEventsPerTask: 2 * STEPS,
  });
  a2a.registerTaskHandler('steps', (ctx) => {
    for (let i = 1; i <= STEPS; i++) ctx.publishMessage(`step ${i}`);
    return { parts: [{ data: { done: STEPS } }] };
  });
  app = createMtlsServer({ identity, authorize: authorizeAny() });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address() as { port: number };
  caller = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: `https://127.0.0.1:${addr.port}` }],
    },
    logger: testLogger(),
  });
  await caller.start();
});

afterAll(async () => {
  await caller?.stop();
  await a2a?.close();
  await app?.close();
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
