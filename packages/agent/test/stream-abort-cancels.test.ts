// A streamed call the caller gives up (its signal, its deadline) left the
// task running on the callee: closing a stream does not cancel a task (A2A
// §3.1.6), and only a Weave callee reads the deadline header, so a non-Weave
// callee (the Python SDK's) kept working for nobody. The caller now cancels
// the task it was streaming, best effort. Real agents (dev Workload API, mTLS
// on loopback); the callee's handler sees its signal abort.
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CallError, type SecureAgent } from '../src/index.js';
import { worldForAllTests } from './helpers.js';

const world = worldForAllTests();

/** Resolves once `cond` holds, polling every 20 ms; rejects after `ms`. */
async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('a streamed call given up', () => {
  const started: string[] = [];
  const aborted: string[] = [];
  let orchestrator: SecureAgent;

  it('is started against a callee whose handler runs until its signal aborts', async () => {
    const search = world
      .search()
      .capability('slow', { input: z.object({ tag: z.string() }) }, async ({ tag }, ctx) => {
        started.push(tag);
        ctx.progress(`working on ${tag}`);
        await new Promise<void>((resolve) => {
          if (ctx.signal.aborted) return resolve();
          ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        });
        aborted.push(tag);
        return { tag };
      });
    orchestrator = await world.startWithOrchestrator(search);
  });

  it("by the caller's signal cancels its task on the callee", async () => {
    const ac = new AbortController();
    const call = orchestrator.callAgent(
      'spiffe://demo.weave/agent/search',
      'slow',
      { tag: 'signal' },
      { stream: true, signal: ac.signal, timeoutMs: 60_000, onProgress: () => ac.abort() },
    );
    const err = (await call.catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.message).toMatch(/aborted by the caller/);
    // The handler's signal aborts long before the 60 s deadline would abort it.
    await until(() => aborted.includes('signal'));
    expect(started).toEqual(['signal']);
  });
});
