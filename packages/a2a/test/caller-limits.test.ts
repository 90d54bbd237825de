// Per-caller limits keyed by the verified SPIFFE ID, over real mTLS: one
// caller cannot take every task slot, every request or the memory kept for
// tasks (issue 19 items 1 and 3); an over-limit call is refused with a
// retryable RESOURCE_EXHAUSTED error and its handler never runs; other
// callers go on; the global limits stay as a backstop.
import { afterEach, describe, expect, it } from 'vitest';
import type { Workload } from '@weave/test-support';
import {
  A2AConfigError,
  type A2AClient,
  type A2AError,
  A2AServer,
  CallerLimits,
  InMemoryTaskStore,
  TaskManager,
  TRUNCATED_METADATA_KEY,
  approxJsonBytes,
  type A2AServerLimits,
  type Task,
} from '../src/index.js';
import {
  refusal,
  serveOnLoopback,
  trustDomainPolicy,
  userMessage,
  workloadsForAll,
} from './helpers/agents.js';

const KiB = 1024;

const { server, alice, bob, batch } = workloadsForAll({
  server: '/agent/server',
  alice: '/agent/alice',
  bob: '/agent/bob',
  batch: '/batch/nightly',
});

/** A running server whose `hold` tasks wait until released, and clients of each caller. */
interface Setup {
  url: string;
  a2a: A2AServer;
  runs: string[];
  release(): void;
  client(w: Workload): A2AClient;
  close(): Promise<void>;
}

async function start(limits: A2AServerLimits): Promise<Setup> {
  const enforcer = trustDomainPolicy('limits');
  const a2a = new A2AServer({
    card: { name: 'limits', description: 'per-caller limits', version: '1' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
    limits: { maxBodyBytes: 4 * 1024 * KiB, ...limits },
  });
  const runs: string[] = [];
  let gate!: () => void;
  let held = new Promise<void>((r) => (gate = r));
  a2a.registerTaskHandler('hold', async (ctx) => {
    runs.push(ctx.caller.toString());
    await held;
    return 'released';
  });
  a2a.registerTaskHandler('echo', async (ctx) => `echo ${ctx.message.parts.length}`);
  a2a.registerTaskHandler('big', async () => 'y'.repeat(600 * KiB));
  const served = await serveOnLoopback(a2a, server);
  return {
    url: served.url,
    a2a,
    runs,
    release() {
      gate();
      held = new Promise<void>((r) => (gate = r));
    },
    client: served.client,
    async close() {
      gate();
      await served.close();
    },
  };
}

/** Starts a `hold` task without waiting for it to finish. */
function startTask(c: A2AClient, url: string) {
  return c.sendMessage(url, {
    message: userMessage('hold'),
    configuration: { returnImmediately: true },
  });
}

function info(err: A2AError): Record<string, string> {
  return ((err.data as Array<{ metadata?: Record<string, string> }>)[0]?.metadata ?? {}) as Record<
    string,
    string
  >;
}

let s: Setup | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

describe('per-caller concurrent tasks', () => {
  it('one caller at its share is refused (retryable, handler not run); another caller still starts tasks', async () => {
    s = await start({ maxConcurrentTasks: 8, perCaller: { maxConcurrentTasks: 3 } });
    const a = s.client(alice);
    const b = s.client(bob);
    for (let i = 0; i < 3; i++) await startTask(a, s.url);
    expect(s.runs).toHaveLength(3);
    const err = await refusal(startTask(a, s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain(alice.id.toString());
    expect(err.message).toMatch(/\(limit 3 per caller\); retry once/);
    expect(info(err)).toMatchObject({ scope: 'caller', limit: '3' });
    // The refused call ran nothing.
    expect(s.runs).toHaveLength(3);
    // Bob is unaffected by Alice's tasks.
    await startTask(b, s.url);
    expect(s.runs.filter((r) => r === bob.id.toString())).toHaveLength(1);
  });

  it('frees the slot when a task finishes', async () => {
    s = await start({ perCaller: { maxConcurrentTasks: 1 } });
    const a = s.client(alice);
    const first = await startTask(a, s.url);
    await refusal(startTask(a, s.url));
    s.release();
    const id = 'task' in first ? first.task.id : '';
    await a.pollUntilComplete(s.url, id, { intervalMs: 20, timeoutMs: 10_000 });
    await startTask(a, s.url);
    expect(s.runs).toHaveLength(2);
  });

  it('keeps the global limit as the backstop', async () => {
    s = await start({ maxConcurrentTasks: 2, perCaller: { maxConcurrentTasks: 5 } });
    await startTask(s.client(alice), s.url);
    await startTask(s.client(bob), s.url);
    const err = await refusal(startTask(s.client(batch), s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toBe('Too many concurrent tasks (limit 2)');
    expect(s.runs).toHaveLength(2);
  });

  it('applies the first rule whose SPIFFE ID pattern matches the caller', async () => {
    s = await start({
      maxConcurrentTasks: 50,
      perCaller: {
        maxConcurrentTasks: 1,
        rules: [{ match: 'spiffe://test.weave/batch/*', maxConcurrentTasks: 4 }],
      },
    });
    const n = s.client(batch);
    for (let i = 0; i < 4; i++) await startTask(n, s.url);
    expect(info(await refusal(startTask(n, s.url)))).toMatchObject({ limit: '4' });
    const a = s.client(alice);
    await startTask(a, s.url);
    expect(info(await refusal(startTask(a, s.url)))).toMatchObject({ limit: '1' });
    expect(s.runs).toHaveLength(5);
  });
});

describe('per-caller request rate', () => {
  it('refuses requests past the burst with a retry delay; other callers are not slowed', async () => {
    s = await start({ perCaller: { requestsPerSecond: 2, burst: 3 } });
    const a = s.client(alice);
    const b = s.client(bob);
    for (let i = 0; i < 3; i++) await a.listTasks(s.url);
    const err = await refusal(a.listTasks(s.url));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toMatch(/over its limit \(2\/s\); retry after \d+ ms/);
    const retryAfter = Number(info(err).retryAfterMs);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(500);
    // A task start over the rate runs nothing.
    await refusal(startTask(a, s.url));
    expect(s.runs).toHaveLength(0);
    for (let i = 0; i < 3; i++) await b.listTasks(s.url);
    // After the advertised wait, the caller is admitted again.
    await new Promise((r) => setTimeout(r, retryAfter + 50));
    await a.listTasks(s.url);
  });
});

describe('CallerLimits configuration', () => {
  it.each([
    [{ maxConcurrentTasks: 0 }, /maxConcurrentTasks/],
    [{ requestsPerSecond: -1 }, /requestsPerSecond/],
    [{ rules: [{ match: 'not-a-spiffe-id' }] }, /rules\.0\.match/],
    [{ rules: [{ match: 'spiffe://td', bogus: 1 }] }, /rules/],
  ])('refuses %j with an A2AConfigError naming the field', (input, msg) => {
    expect(() => new CallerLimits(input as never, 10)).toThrow(A2AConfigError);
    expect(() => new CallerLimits(input as never, 10)).toThrow(msg);
  });
});

/** SendMessage of `bytes` of text to `skill`; blocking unless `immediately`. */
async function send(
  c: A2AClient,
  url: string,
  skill: string,
  bytes: number,
  immediately = false,
): Promise<Task> {
  const r = await c.sendMessage(url, {
    message: userMessage(skill, 'x'.repeat(bytes)),
    configuration: { returnImmediately: immediately },
  });
  if (!('task' in r)) throw new Error('expected a task');
  return r.task;
}

function store(r: Setup): InMemoryTaskStore {
  return r.a2a.manager.store as InMemoryTaskStore;
}

describe('task memory bounded by bytes', () => {
  it('a caller flooding 100 KB messages keeps at most its share; its oldest finished tasks go, not another caller’s', async () => {
    s = await start({ retainedBytes: { total: 4 * 1024 * KiB, perCaller: 1024 * KiB } });
    const a = s.client(alice);
    const b = s.client(bob);
    const bobs = await send(b, s.url, 'echo', 100 * KiB);
    const alices: Task[] = [];
    let most = 0;
    for (let i = 0; i < 40; i++) {
      alices.push(await send(a, s.url, 'echo', 100 * KiB));
      most = Math.max(most, store(s).bytes(alice.id.toString()));
    }
    // 40 × 100 KB = 4 MB sent; kept: under 1 MiB, the newest.
    expect(most).toBeLessThanOrEqual(1024 * KiB);
    expect(most).toBeGreaterThan(800 * KiB);
    expect((await a.getTask(s.url, (alices.at(-1) as Task).id)).status.state).toBe('TASK_STATE_COMPLETED');
    const oldest = await refusal(a.getTask(s.url, (alices[0] as Task).id));
    expect(oldest.code).toBe('TASK_NOT_FOUND');
    // Bob's task, older than all of Alice's, is still there.
    const kept = await b.getTask(s.url, bobs.id);
    expect(kept.history?.[0]?.parts[0]?.text).toHaveLength(100 * KiB);
    expect(store(s).bytes()).toBeLessThanOrEqual(4 * 1024 * KiB);
  });

  it('when unfinished tasks hold a caller’s share, its next task is refused (retryable, no handler run); others go on', async () => {
    s = await start({ retainedBytes: { total: 4 * 1024 * KiB, perCaller: 1024 * KiB } });
    const a = s.client(alice);
    const b = s.client(bob);
    for (let i = 0; i < 3; i++) await send(a, s.url, 'hold', 300 * KiB, true);
    await expect.poll(() => s?.runs.length).toBe(3);
    const err = await refusal(send(a, s.url, 'hold', 300 * KiB, true));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain(alice.id.toString());
    expect(err.message).toMatch(/retry once one of them has finished/);
    expect((err.data as Array<{ metadata?: Record<string, string> }>)[0]?.metadata).toMatchObject({
      scope: 'caller',
      limitBytes: String(1024 * KiB),
    });
    expect(s.runs).toHaveLength(3);
    // Bob has his own share.
    await send(b, s.url, 'hold', 300 * KiB, true);
    await expect.poll(() => s?.runs.length).toBe(4);
    // Once Alice's tasks finish, their room can be taken again.
    s.release();
    await expect.poll(() => s?.a2a.manager.activeCount).toBe(0);
    await send(a, s.url, 'echo', 300 * KiB);
  });

  it('a task larger than the caller’s whole share is refused as too large (not retryable), and frees nothing', async () => {
    s = await start({ retainedBytes: { total: 4 * 1024 * KiB, perCaller: 256 * KiB } });
    const a = s.client(alice);
    const earlier = await send(a, s.url, 'echo', 100 * KiB);
    const runs = s.runs.length;
    const err = await refusal(send(a, s.url, 'echo', 300 * KiB));
    expect(err.code).toBe('PAYLOAD_TOO_LARGE');
    expect(err.message).toMatch(
      /larger than the caller's whole share of task memory \(262144 bytes\); send less/,
    );
    expect(err.message).not.toMatch(/retry/);
    expect((err.data as Array<{ reason?: string; metadata?: Record<string, string> }>)[0]).toMatchObject({
      reason: 'PAYLOAD_TOO_LARGE',
      metadata: { scope: 'caller', limitBytes: String(256 * KiB) },
    });
    expect(s.runs).toHaveLength(runs); // no handler ran
    // The caller's finished task was not evicted to make room that could never be enough.
    expect((await a.getTask(s.url, earlier.id)).status.state).toBe('TASK_STATE_COMPLETED');
  });

  it('a finished task above the per-task bound keeps what fits and says what went', async () => {
    s = await start({ retainedBytes: { perTask: 512 * KiB } });
    const a = s.client(alice);
    const done = await send(a, s.url, 'big', 1 * KiB);
    const kept = await a.getTask(s.url, done.id);
    expect(kept.status.state).toBe('TASK_STATE_COMPLETED');
    // No stream carried it, so its event log went when it ended: the cut starts at the history.
    expect(kept.metadata?.[TRUNCATED_METADATA_KEY]).toBe('history,artifacts');
    expect(kept.artifacts ?? []).toHaveLength(0);
    expect(store(s).bytes(alice.id.toString())).toBeLessThanOrEqual(512 * KiB);
    // A small task is kept whole.
    const small = await send(a, s.url, 'echo', 1 * KiB);
    const whole = await a.getTask(s.url, small.id);
    expect(whole.metadata?.[TRUNCATED_METADATA_KEY]).toBeUndefined();
    expect(whole.artifacts).toHaveLength(1);
    expect(whole.history?.[0]?.parts[0]?.text).toHaveLength(1 * KiB);
  });
});

describe('expired tasks are swept on a clock', () => {
  it('without anyone calling cleanup() or creating a task', async () => {
    const mem = new InMemoryTaskStore({ terminalTtlMs: 50 });
    const m = new TaskManager({ store: mem, sweepIntervalMs: 100 });
    try {
      const r = await m.create({
        owner: alice.id.toString(),
        skill: 's',
        message: { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'x'.repeat(10 * KiB) }] },
      });
      m.setStatus(r.task.id, 'TASK_STATE_COMPLETED');
      expect(mem.size).toBe(1);
      expect(mem.bytes()).toBeGreaterThan(10 * KiB);
      await expect.poll(() => mem.size, { timeout: 5000 }).toBe(0);
      expect(mem.bytes()).toBe(0);
      expect(mem.bytes(alice.id.toString())).toBe(0);
    } finally {
      await m.close();
    }
  });
});

describe('approxJsonBytes', () => {
  it('is close to the JSON size and counts a shared object once', () => {
    const msg = { messageId: 'm', role: 'ROLE_USER', parts: [{ text: 'z'.repeat(5000) }] };
    const json = JSON.stringify(msg).length;
    const est = approxJsonBytes(msg);
    expect(est).toBeGreaterThanOrEqual(json);
    expect(est).toBeLessThan(json * 1.1);
    expect(approxJsonBytes([msg, { again: msg }])).toBeLessThan(est + 50);
  });

  it('counts shared objects once in a value of hundreds of objects, and the same every time', () => {
    // Past the first few dozen objects the walk remembers them differently:
    // sharing is still seen on both sides of that point.
    const parts = Array.from({ length: 300 }, (_, i) => ({ text: `part ${i}` }));
    const once = approxJsonBytes({ parts });
    const twice = approxJsonBytes({ parts, again: parts.slice() });
    // The copy of the array adds its commas and brackets only; each part is counted once.
    expect(twice - once).toBeLessThan(parts.length + 20);
    expect(approxJsonBytes({ parts, again: parts.slice() })).toBe(twice);
    const distinct = approxJsonBytes({ parts, again: parts.map((p) => ({ ...p })) });
    expect(distinct - once).toBeGreaterThan(once * 0.9);
    // A cycle ends the walk rather than looping.
    const a: Record<string, unknown> = { name: 'a' };
    a.self = a;
    expect(approxJsonBytes(a)).toBeLessThan(40);
  });

  it('gives the same estimate when a getter walks another value during the walk', () => {
    const inner = { text: 'y'.repeat(100) };
    const innerBytes = approxJsonBytes(inner);
    let seenInside = 0;
    const outer = {
      get nested() {
        seenInside = approxJsonBytes(inner);
        return inner;
      },
      text: 'x'.repeat(50),
    };
    const plain = { nested: inner, text: 'x'.repeat(50) };
    expect(approxJsonBytes(outer)).toBe(approxJsonBytes(plain));
    expect(seenInside).toBe(innerBytes);
  });
});
