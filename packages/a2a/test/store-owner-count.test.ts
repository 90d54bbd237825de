// The embedded store's task count has a per-owner share, as its bytes do: a
// caller at its share makes room with its own oldest finished task, is
// refused (retryable) when none of its tasks has finished, and only a full
// store drops another caller's. Before, one caller sending maxTasks tiny
// messages pushed every other caller's finished task out (GetTask on it
// answered TASK_NOT_FOUND).
import { afterEach, describe, expect, it } from 'vitest';
import type { Workload } from '@weave/test-support';
import {
  A2AConfigError,
  type A2AClient,
  A2AServer,
  InMemoryTaskStore,
  TaskStoreFullError,
  type Task,
  type TaskRecord,
  type TaskState,
} from '../src/index.js';
import {
  refusal,
  serveOnLoopback,
  trustDomainPolicy,
  userMessage,
  workloadsForAll,
} from './helpers/agents.js';

const { server, alice, bob } = workloadsForAll({
  server: '/agent/server',
  alice: '/agent/alice',
  bob: '/agent/bob',
});

/** A record attached to the store as the TaskManager does it. */
function attach(store: InMemoryTaskStore, id: string, state: TaskState, owner = 'spiffe://t/a'): TaskRecord {
  const now = Date.now();
  const r: TaskRecord = {
    task: { id, contextId: 'ctx', status: { state } },
    owner,
    skill: 's',
    createdAt: now,
    updatedAt: now,
    seq: 1,
  };
  store.attachNow(r, [{ seq: 1, event: { task: r.task } }]);
  return r;
}

function finish(store: InMemoryTaskStore, r: TaskRecord): void {
  r.task.status = { state: 'TASK_STATE_COMPLETED' };
  store.finishNow(r.task.id);
}

/** Finishes a task with a history, which a small `maxBytesPerTask` cuts (a new entry then replaces it). */
function finishCut(store: InMemoryTaskStore, id: string): void {
  const r = attach(store, id, 'TASK_STATE_WORKING');
  r.task.history = [{ messageId: `m-${id}`, role: 'ROLE_USER', parts: [{ text: 'x'.repeat(100) }] }];
  finish(store, r);
}

/** The ids of `ids` the store still keeps. */
async function kept(store: InMemoryTaskStore, ids: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const id of ids) if ((await store.get(id)) !== undefined) out.push(id);
  return out;
}

/** What `f` throws. */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

interface Setup {
  url: string;
  store: InMemoryTaskStore;
  runs: string[];
  release(): void;
  client(w: Workload): A2AClient;
  close(): Promise<void>;
}

/** A server over `store` whose `hold` tasks wait until released. */
async function start(store: InMemoryTaskStore): Promise<Setup> {
  const a2a = new A2AServer({
    card: { name: 'count', description: 'per-owner task count', version: '1' },
    selfId: server.id,
    enforcer: trustDomainPolicy('count'),
    heartbeatMs: 0,
    taskStore: store,
  });
  const runs: string[] = [];
  let gate!: () => void;
  const held = new Promise<void>((r) => (gate = r));
  a2a.registerTaskHandler('hold', async (ctx) => {
    runs.push(ctx.caller.toString());
    await held;
    return 'released';
  });
  a2a.registerTaskHandler('echo', async () => 'echo');
  const served = await serveOnLoopback(a2a, server);
  return {
    url: served.url,
    store,
    runs,
    release: () => gate(),
    client: served.client,
    async close() {
      gate();
      await served.close();
    },
  };
}

async function send(c: A2AClient, url: string, skill: string, immediately = false): Promise<Task> {
  const r = await c.sendMessage(url, {
    message: userMessage(skill),
    configuration: { returnImmediately: immediately },
  });
  if (!('task' in r)) throw new Error('expected a task');
  return r.task;
}

let s: Setup | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

describe('per-owner task count, over a real server', () => {
  it("a caller flooding tiny tasks keeps its share; its own oldest finished tasks go, not another caller's", async () => {
    // 8 tasks, 2 per caller by default.
    s = await start(new InMemoryTaskStore({ maxTasks: 8 }));
    const a = s.client(alice);
    const b = s.client(bob);
    const bobs = await send(b, s.url, 'echo');
    expect(bobs.status.state).toBe('TASK_STATE_COMPLETED');
    const alices: Task[] = [];
    for (let i = 0; i < 12; i++) alices.push(await send(a, s.url, 'echo'));
    // Bob's task, older than all of Alice's, is still there.
    expect((await b.getTask(s.url, bobs.id)).status.state).toBe('TASK_STATE_COMPLETED');
    // Alice keeps her two newest; her oldest went.
    for (const t of alices.slice(-2)) {
      expect((await a.getTask(s.url, t.id)).status.state).toBe('TASK_STATE_COMPLETED');
    }
    expect((await refusal(a.getTask(s.url, (alices[0] as Task).id))).code).toBe('TASK_NOT_FOUND');
    expect(s.store.size).toBe(3);
  });

  it('a caller whose share holds unfinished tasks is refused (retryable, handler not run); another caller still starts tasks', async () => {
    s = await start(new InMemoryTaskStore({ maxTasks: 8 }));
    const a = s.client(alice);
    const b = s.client(bob);
    const bobs = await send(b, s.url, 'echo');
    const holds = [await send(a, s.url, 'hold', true), await send(a, s.url, 'hold', true)];
    const err = await refusal(send(a, s.url, 'hold', true));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    // Said as the caller's own limit (its scope and share), not the server's.
    expect(err.message).toMatch(/for caller spiffe:\/\/.* \(limit 2 per caller\)/);
    expect(JSON.stringify(err.data)).toContain('"scope":"caller"');
    // The refused call ran nothing, and freed nothing.
    expect(s.runs).toEqual([alice.id.toString(), alice.id.toString()]);
    expect((await b.getTask(s.url, bobs.id)).status.state).toBe('TASK_STATE_COMPLETED');
    // Bob is unaffected by Alice's share.
    await send(b, s.url, 'hold', true);
    expect(s.runs.at(-1)).toBe(bob.id.toString());
    // Once Alice's tasks finish, her own oldest makes room again.
    s.release();
    for (const t of holds) await a.pollUntilComplete(s.url, t.id, { intervalMs: 20, timeoutMs: 5000 });
    expect((await send(a, s.url, 'echo')).status.state).toBe('TASK_STATE_COMPLETED');
    expect((await refusal(a.getTask(s.url, (holds[0] as Task).id))).code).toBe('TASK_NOT_FOUND');
    expect((await a.getTask(s.url, (holds[1] as Task).id)).status.state).toBe('TASK_STATE_COMPLETED');
  });
});

describe('InMemoryTaskStore maxTasksPerOwner', () => {
  it("drops the owner's oldest finished task (in the order they finished), none of another owner's", async () => {
    const store = new InMemoryTaskStore({ maxTasks: 8, maxTasksPerOwner: 3 });
    attach(store, 'b1', 'TASK_STATE_COMPLETED', 'spiffe://t/b');
    const a1 = attach(store, 'a1', 'TASK_STATE_WORKING');
    attach(store, 'a2', 'TASK_STATE_COMPLETED');
    const a3 = attach(store, 'a3', 'TASK_STATE_WORKING');
    // a1 finishes after a2: a2 is the oldest finished.
    finish(store, a1);
    attach(store, 'a4', 'TASK_STATE_WORKING');
    expect(await kept(store, ['b1', 'a1', 'a2', 'a3', 'a4'])).toEqual(['b1', 'a1', 'a3', 'a4']);
    attach(store, 'a5', 'TASK_STATE_WORKING');
    expect(await kept(store, ['b1', 'a1', 'a3', 'a4', 'a5'])).toEqual(['b1', 'a3', 'a4', 'a5']);
    // All three unfinished: refused, caller scope, before anything is freed.
    const err = thrown(() => attach(store, 'a6', 'TASK_STATE_WORKING'));
    expect(err).toBeInstanceOf(TaskStoreFullError);
    expect(err).toMatchObject({ code: 'TASK_STORE_FULL', scope: 'caller', limit: 3 });
    expect((err as Error).message).toContain('spiffe://t/a');
    expect(store.size).toBe(4);
    // Another owner is not held to Alice's share.
    attach(store, 'b2', 'TASK_STATE_WORKING', 'spiffe://t/b');
    // One of hers finishing frees her slot, and it is the one that goes.
    finish(store, a3);
    attach(store, 'a6', 'TASK_STATE_WORKING');
    expect(await kept(store, ['b1', 'b2', 'a3', 'a4', 'a5', 'a6'])).toEqual(['b1', 'b2', 'a4', 'a5', 'a6']);
  });

  it("evicts anyone's oldest finished task only when the whole store is full", async () => {
    const store = new InMemoryTaskStore({ maxTasks: 8, maxTasksPerOwner: 5 });
    for (const id of ['b1', 'b2', 'b3']) attach(store, id, 'TASK_STATE_COMPLETED', 'spiffe://t/b');
    for (const id of ['a1', 'a2', 'a3', 'a4', 'a5']) attach(store, id, 'TASK_STATE_COMPLETED');
    expect(store.size).toBe(8);
    // A third owner, well within its share: the oldest finished task of all goes, Bob's.
    attach(store, 'c1', 'TASK_STATE_WORKING', 'spiffe://t/c');
    expect(await store.get('b1')).toBeUndefined();
    expect(await kept(store, ['b2', 'b3', 'a1', 'c1'])).toEqual(['b2', 'b3', 'a1', 'c1']);
    expect(store.size).toBe(8);
    // Full of unfinished tasks: the store-wide refusal, as before.
    const full = new InMemoryTaskStore({ maxTasks: 2, maxTasksPerOwner: 2 });
    attach(full, 'x', 'TASK_STATE_WORKING', 'spiffe://t/x');
    attach(full, 'y', 'TASK_STATE_WORKING', 'spiffe://t/y');
    expect(thrown(() => attach(full, 'z', 'TASK_STATE_WORKING', 'spiffe://t/z'))).toMatchObject({
      code: 'TASK_STORE_FULL',
      scope: 'store',
      limit: 2,
    });
  });

  it('counts a task out whatever removes it: delete, expiry, eviction by the full store, a cut task', async () => {
    const store = new InMemoryTaskStore({ maxTasks: 4, maxTasksPerOwner: 2, maxBytesPerTask: 1 });
    finishCut(store, 'a1');
    finishCut(store, 'a2');
    await store.delete('a1');
    // Room without dropping a2.
    finishCut(store, 'a3');
    expect(await kept(store, ['a2', 'a3'])).toEqual(['a2', 'a3']);
    expect((await store.get('a2'))?.task.metadata?.['weave.truncated']).toBeDefined();
    // Cut tasks are still dropped by the share, oldest first.
    attach(store, 'a4', 'TASK_STATE_WORKING');
    expect(await kept(store, ['a2', 'a3', 'a4'])).toEqual(['a3', 'a4']);
    // Expired: gone from the count too.
    expect(await store.sweep(Date.now() + 2 * 3_600_000)).toBe(1);
    attach(store, 'a5', 'TASK_STATE_WORKING');
    expect(await kept(store, ['a4', 'a5'])).toEqual(['a4', 'a5']);
    // Evicted by the full store (another owner's task needs the slot): gone from the count.
    const bs = ['b1', 'b2'].map((id) => attach(store, id, 'TASK_STATE_WORKING', 'spiffe://t/b'));
    for (const b of bs) finish(store, b);
    await store.delete('a4');
    attach(store, 'c1', 'TASK_STATE_WORKING', 'spiffe://t/c');
    attach(store, 'c2', 'TASK_STATE_WORKING', 'spiffe://t/c');
    expect(await store.get('b1')).toBeUndefined();
    await store.delete('c1');
    // Bob holds one task now: his next one drops nothing of his.
    attach(store, 'b3', 'TASK_STATE_WORKING', 'spiffe://t/b');
    expect(await kept(store, ['b2', 'b3'])).toEqual(['b2', 'b3']);
    for (const id of ['a5', 'b2', 'b3', 'c1', 'c2']) await store.delete(id);
    expect(store.size).toBe(0);
    expect(store.bytes()).toBe(0);
    expect(store.bytes('spiffe://t/a')).toBe(0);
  });

  it('defaults to a quarter of maxTasks, at least 1, and refuses a share that is not a positive whole number', () => {
    const one = new InMemoryTaskStore({ maxTasks: 3 });
    attach(one, 'a1', 'TASK_STATE_WORKING');
    expect(thrown(() => attach(one, 'a2', 'TASK_STATE_WORKING'))).toMatchObject({
      scope: 'caller',
      limit: 1,
    });
    const two = new InMemoryTaskStore({ maxTasks: 8 });
    attach(two, 'a1', 'TASK_STATE_WORKING');
    attach(two, 'a2', 'TASK_STATE_WORKING');
    expect(thrown(() => attach(two, 'a3', 'TASK_STATE_WORKING'))).toMatchObject({
      scope: 'caller',
      limit: 2,
    });
    for (const v of [0, -1, 1.5, Number.NaN]) {
      expect(() => new InMemoryTaskStore({ maxTasksPerOwner: v })).toThrow(A2AConfigError);
      expect(() => new InMemoryTaskStore({ maxTasksPerOwner: v })).toThrow(/maxTasksPerOwner/);
    }
  });
});
