// A streaming callAgent collects the callee's artifact chunks into its result.
// Each event is capped on its own, but their sum was not: a verified peer
// appending 256 KiB chunks drove a caller to a 1 GB heap and out of memory.
// The collected result is capped like a unary answer (4 MiB): past it the
// call fails and stops reading, while the callee is still sending.
// Real dev Workload API, mTLS on loopback, local policy; the callee is an
// A2AServer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AClientError, type A2AServer } from '@weave/a2a';
import { CallError, type SecureAgent } from '../src/index.js';
import { ID, startSearchServer, startWorld, type SearchServer, type World } from './helpers.js';

const CHUNK = 'x'.repeat(64 * 1024);

let world: World;
let search: SearchServer;
let caller: SecureAgent;

/** Publishes `chunks` appends of 64 KiB to one artifact. */
async function publishChunks(
  ctx: Parameters<Parameters<A2AServer['registerTaskHandler']>[1]>[0],
  chunks: number,
): Promise<void> {
  ctx.publishArtifact({ artifactId: 'r', name: 'result', parts: [{ text: '' }] });
  for (let i = 0; i < chunks && !ctx.signal.aborted; i++) {
    ctx.publishArtifact({ artifactId: 'r', parts: [{ text: CHUNK }] }, { append: true });
    await ctx.drained();
  }
}

beforeAll(async () => {
  world = await startWorld();
  search = await startSearchServer(
    world,
    { description: 'appends without end', enforcer: { audit: { record: () => undefined } } },
    (a2a) => {
      // 6.25 MiB of chunks, then the task never finishes (until the server closes):
      // a call that waited for the stream's end would run into its deadline.
      a2a.registerTaskHandler('stuck', async (ctx) => {
        await publishChunks(ctx, 100);
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
        return { parts: [{ text: 'never read' }] };
      });
      // 3 MiB of chunks, under the cap: the result is read as before.
      a2a.registerTaskHandler('steps', async (ctx) => {
        await publishChunks(ctx, 48);
        ctx.publishArtifact({ artifactId: 'r', parts: [] }, { append: true, lastChunk: true });
      });
    },
  );
  caller = search.caller;
});

afterAll(async () => {
  await search?.close();
  await world?.close();
});

describe('the result a streaming callAgent collects', () => {
  it('past 4 MiB fails the call with RESPONSE_TOO_LARGE while the callee still sends', async () => {
    const err: unknown = await caller
      .callAgent(ID.search, 'stuck', {}, { stream: true, timeoutMs: 15_000 })
      .then(
        () => new Error('expected the call to fail'),
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('CALL_FAILED');
    const cause = (err as CallError).cause;
    expect(cause).toBeInstanceOf(A2AClientError);
    expect((cause as A2AClientError).code).toBe('RESPONSE_TOO_LARGE');
  });

  it('under the cap is read whole', async () => {
    const out = await caller.callAgent(ID.search, 'steps', {}, { stream: true, timeoutMs: 15_000 });
    expect(out).toBe(CHUNK.repeat(48));
  });
});
