// A blocking SendMessage may be answered before its task settles: the
// callee's own wait is shorter than the call's deadline (Weave's
// `limits.blockingTimeoutMs`, 60 s by default; other servers have theirs), or
// the replica answering it stopped and handed the task to another one. The
// task runs on. callAgent used to fail such a call at once (`CALL_FAILED
// "the callee's task ended in TASK_STATE_WORKING"`) with its deadline still
// ahead; it now follows the task (GetTask) until it settles or the deadline
// passes, and then cancels it (a callee that is not Weave does not read the
// deadline it was sent). Real mTLS callee (an A2AServer with a short blocking
// wait), real caller agent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskContext } from '@weave/a2a';
import { CallError } from '../src/index.js';
import { ID, startSearchServer, startWorld, type SearchServer, type World } from './helpers.js';

/** The callee's blocking wait: far less than each handler takes. */
const BLOCKING_MS = 200;

let world: World;
let search: SearchServer;
/** Each task's handler context, and why its signal aborted (when it did). */
const contexts = new Map<string, TaskContext>();
const reasons = new Map<string, unknown>();

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });

beforeAll(async () => {
  world = await startWorld();
  search = await startSearchServer(
    world,
    { description: 'answers blocking calls early', server: { limits: { blockingTimeoutMs: BLOCKING_MS } } },
    (a2a) => {
      // Takes `ms` (default 1 s), then answers; its signal's reason is kept.
      a2a.registerTaskHandler('slow', async (ctx) => {
        contexts.set(ctx.taskId, ctx);
        const { ms = 1000 } = (ctx.message.parts[0]?.data ?? {}) as { ms?: number };
        ctx.signal.addEventListener('abort', () => reasons.set(ctx.taskId, ctx.signal.reason), {
          once: true,
        });
        await sleep(ms, ctx.signal);
        return { parts: [{ data: { slept: ms } }] };
      });
      // Answers its blocking call WORKING, then publishes more than a caller takes in one answer (4 MiB).
      a2a.registerTaskHandler('stuck', async (ctx) => {
        contexts.set(ctx.taskId, ctx);
        // After the blocking answer, which is small.
        await sleep(BLOCKING_MS + 400, ctx.signal);
        for (let i = 0; i < 5; i++) {
          ctx.publishArtifact({ artifactId: `a${i}`, parts: [{ text: 'x'.repeat(1024 * 1024) }] });
        }
        await sleep(30_000, ctx.signal);
        return { parts: [{ text: 'never' }] };
      });
      // Works, then asks for input: a call cannot answer that.
      a2a.registerTaskHandler('steps', async (ctx) => {
        contexts.set(ctx.taskId, ctx);
        await sleep(600, ctx.signal);
        await ctx.requestInput('which one?');
        return { parts: [{ text: 'never' }] };
      });
    },
  );
});

afterAll(async () => {
  await search?.close();
  await world?.close();
});

describe('callAgent to a callee whose blocking wait ends before the task settles', () => {
  it('follows the task until it completes and returns its result', async () => {
    const result = await search.caller.callAgent(ID.search, 'slow', { ms: 1200 }, { timeoutMs: 10_000 });
    expect(result).toEqual({ slept: 1200 });
  });

  it('past its deadline: DEADLINE_EXCEEDED naming the task, and the task canceled on the callee', async () => {
    const err = await search.caller.callAgent(ID.search, 'slow', { ms: 30_000 }, { timeoutMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('DEADLINE_EXCEEDED');
    const taskId = (err as CallError).taskId;
    expect(taskId).toBeDefined();
    // The handler's signal aborted: the task did not run on for 30 s.
    await expect.poll(() => contexts.get(taskId!)?.signal.aborted, { timeout: 5000 }).toBe(true);
    expect(reasons.get(taskId!)).toMatchObject({ code: 'TASK_CANCELED' });
  });

  it("the caller's abort while the task is followed: CALL_FAILED naming the task, and the task canceled", async () => {
    const ac = new AbortController();
    const before = contexts.size;
    const call = search.caller.callAgent(
      ID.search,
      'slow',
      { ms: 30_000 },
      { timeoutMs: 20_000, signal: ac.signal },
    );
    // Well past the callee's blocking answer (200 ms after the task started): the call follows the task by now.
    await expect.poll(() => contexts.size > before, { timeout: 10_000 }).toBe(true);
    setTimeout(() => ac.abort(), 1500);
    const err = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('CALL_FAILED');
    expect((err as CallError).message).toContain('aborted by the caller');
    const taskId = (err as CallError).taskId!;
    await expect.poll(() => contexts.get(taskId)?.signal.aborted, { timeout: 5000 }).toBe(true);
    expect(reasons.get(taskId)).toMatchObject({ code: 'TASK_CANCELED' });
  });

  it('a read the caller can never take (an answer too large) ends the call at once with that error, not at the deadline', async () => {
    const t0 = Date.now();
    const err = await search.caller.callAgent(ID.search, 'stuck', {}, { timeoutMs: 20_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('CALL_FAILED');
    expect((err as CallError).message).toMatch(/exceeds|too large/i);
    // Not tried again until the deadline (20 s).
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a task that comes to wait for input while followed: CALL_FAILED naming the state, and the task canceled', async () => {
    const err = await search.caller.callAgent(ID.search, 'steps', {}, { timeoutMs: 10_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('CALL_FAILED');
    expect((err as CallError).taskState).toBe('TASK_STATE_INPUT_REQUIRED');
    const taskId = (err as CallError).taskId!;
    await expect.poll(() => contexts.get(taskId)?.signal.aborted, { timeout: 5000 }).toBe(true);
  });
});
